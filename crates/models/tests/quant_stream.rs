//! Block streaming and parking an expert in host memory, with the CPU as both host and device: the
//! streamed model computes exactly what the resident one does (outputs and LoRA gradients), the
//! ring never holds more blocks than its slots and reuses the ones needed again soon, and an
//! offload/load round trip changes nothing.

mod tiny_support;

use std::sync::Mutex;
use tch::{Device, Kind, Tensor};
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::quant::Fp8Mode;
use wanlora_models::transformer::checkpoint::{forward_backward, CheckpointPolicy};
use wanlora_models::transformer::{
    BlockOffload, BlockStreamer, HostArena, LoadOptions, TransformerConfig, WanTransformer,
};

fn single_threaded() {
    tch::set_num_threads(1);
}

/// libtorch has one random generator per process and tests run in parallel: whatever must come out
/// the same twice (random weights, inputs) is drawn while holding this lock.
static RNG: Mutex<()> = Mutex::new(());

fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    let _guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    f()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn config() -> TransformerConfig {
    tiny_support::tiny_config(4)
}

fn model(fp8: Fp8Mode, offload: Option<BlockOffload>) -> WanTransformer {
    // The random weights come from libtorch's generator, seeded per tensor.
    seeded(0, || {
        tiny_support::tiny_model(
            config(),
            3,
            &LoadOptions {
                fp8,
                fp8_embeddings: false,
                offload,
            },
        )
    })
}

/// Latents, timesteps, text and the target velocity of a two-sample batch.
fn inputs() -> (Tensor, Tensor, Tensor, Tensor) {
    let cfg = config();
    seeded(21, || {
        (
            Tensor::randn([2, cfg.in_channels, 3, 4, 4], (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&[930.0f32, 40.0]),
            Tensor::randn([2, 6, cfg.text_dim], (Kind::Float, Device::Cpu)),
            Tensor::randn([2, 16, 3, 4, 4], (Kind::Float, Device::Cpu)),
        )
    })
}

fn lora() -> LoraSet {
    seeded(8, || {
        let set = LoraSet::new_trainable(&config(), 4, 2.0, Device::Cpu, 8);
        tch::no_grad(|| {
            for p in set.parameters() {
                let _ = p.shallow_clone().uniform_(-0.3, 0.3);
            }
        });
        set
    })
}

/// Loss and LoRA gradients of one checkpointed step.
fn step(model: &WanTransformer, reference: &LoraSet, keep_blocks: usize) -> (f64, Vec<Tensor>) {
    let (x, t, c, target) = inputs();
    let lora = reference.detached_copy();
    let params: Vec<Tensor> = lora
        .parameters()
        .into_iter()
        .map(|p| p.set_requires_grad(true))
        .collect();
    let apply = LoraApply {
        set: &lora,
        multiplier: Multiplier::Scalar(1.0),
    };
    let loss = forward_backward(
        model,
        &x,
        &t,
        &c,
        &apply,
        CheckpointPolicy {
            keep_blocks,
            keep_attention: 0,
            host_inputs: false,
        },
        |pred| Ok((pred - &target).square().mean(Kind::Float)),
    )
    .unwrap();
    (
        loss.double_value(&[]),
        params.iter().map(|p| p.grad().copy()).collect(),
    )
}

#[test]
fn streamed_blocks_give_the_resident_model_outputs_and_gradients() {
    single_threaded();
    let reference_lora = lora();
    for fp8 in [Fp8Mode::Off, Fp8Mode::WeightOnly, Fp8Mode::Matmul] {
        let resident = model(fp8, None);
        let (x, t, c, _) = inputs();
        let expected = tch::no_grad(|| resident.forward(&x, &t, &c, None)).unwrap();
        let expected_steps = [
            step(&resident, &reference_lora, 0),
            step(&resident, &reference_lora, 1),
        ];
        for (blocks, slots) in [(4, 1), (4, 2), (2, 2), (3, 3)] {
            let offload = BlockOffload {
                blocks,
                ring_slots: slots,
            };
            let streamed = model(fp8, Some(offload));
            let what = format!("{fp8:?}, {blocks} streamed, {slots} slots");
            assert_eq!(
                (0..4).filter(|&i| streamed.is_streamed(i)).count(),
                blocks,
                "{what}"
            );
            let out = tch::no_grad(|| streamed.forward(&x, &t, &c, None)).unwrap();
            assert_eq!(max_abs_diff(&out, &expected), 0.0, "{what}: forward");
            let stats = streamed.stream_stats().expect("a streamed pass");
            assert_eq!(stats.fetches, blocks, "{what}: one copy per streamed block");
            assert!(
                stats.max_held <= slots,
                "{what}: ring held {}",
                stats.max_held
            );
            for (keep, (expected_loss, expected_grads)) in expected_steps.iter().enumerate() {
                let (loss, grads) = step(&streamed, &reference_lora, keep);
                assert_eq!(loss, *expected_loss, "{what}, keep {keep}: loss");
                for (i, (g, e)) in grads.iter().zip(expected_grads).enumerate() {
                    assert_eq!(max_abs_diff(g, e), 0.0, "{what}, keep {keep}: gradient {i}");
                }
                let stats = streamed.stream_stats().expect("a streamed step");
                assert!(
                    stats.max_held <= slots,
                    "{what}: ring held {}",
                    stats.max_held
                );
            }
        }
    }
}

/// With two slots, the checkpointed step's schedule 0 1 2 3 | 3 2 1 0 copies blocks 0–3 forward,
/// keeps 2 and 3 for the start of the backward, and copies only 1 and 0 again: 6 fetches, not 8.
/// With more slots, the block given up is the one needed farthest ahead.
#[test]
fn the_ring_keeps_the_blocks_needed_soonest() {
    single_threaded();
    let streamed = model(
        Fp8Mode::WeightOnly,
        Some(BlockOffload {
            blocks: 4,
            ring_slots: 2,
        }),
    );
    step(&streamed, &lora(), 0);
    let stats = streamed.stream_stats().unwrap();
    assert_eq!((stats.fetches, stats.max_held, stats.slots), (6, 2, 2));
    assert_eq!(stats.bytes, 6 * streamed.blocks[0].bytes());
    // With three slots, block 3 (not needed again) makes way for block 0 at the end: 5 fetches.
    let three = model(
        Fp8Mode::WeightOnly,
        Some(BlockOffload {
            blocks: 4,
            ring_slots: 3,
        }),
    );
    step(&three, &lora(), 0);
    let stats = three.stream_stats().unwrap();
    assert_eq!((stats.fetches, stats.max_held), (5, 3));
    // With one slot every visit copies.
    let one = model(
        Fp8Mode::WeightOnly,
        Some(BlockOffload {
            blocks: 4,
            ring_slots: 1,
        }),
    );
    step(&one, &lora(), 0);
    let stats = one.stream_stats().unwrap();
    assert_eq!((stats.fetches, stats.max_held), (7, 1));
}

#[test]
fn the_ring_never_holds_more_than_its_slots() {
    single_threaded();
    let schedule = vec![0, 1, 2, 3, 3, 2, 0, 1, 3, 3, 0];
    for slots in 1..=4 {
        let streamed = model(
            Fp8Mode::WeightOnly,
            Some(BlockOffload {
                blocks: 4,
                ring_slots: slots,
            }),
        );
        let mut blocks = BlockStreamer::new(&streamed, schedule.clone()).unwrap();
        for &i in &schedule {
            let fetched = blocks.block(i).unwrap();
            // The device copy holds the host block's values in its own storage.
            let host = &streamed.blocks[i];
            for (a, b) in fetched.tensors().iter().zip(host.tensors()) {
                assert_ne!(a.data_ptr(), b.data_ptr());
                assert!(a.to_kind(Kind::Float).equal(&b.to_kind(Kind::Float)));
            }
            assert!(
                blocks.held() <= slots,
                "{} held with {slots} slots",
                blocks.held()
            );
        }
        assert!(blocks.stats().max_held <= slots);
        // More slots never mean more copies than visits, and every block is copied at least once.
        assert!((4..=schedule.len()).contains(&blocks.stats().fetches));
    }
}

#[test]
fn a_request_out_of_schedule_is_refused() {
    single_threaded();
    let streamed = model(
        Fp8Mode::Off,
        Some(BlockOffload {
            blocks: 2,
            ring_slots: 2,
        }),
    );
    let mut blocks = BlockStreamer::new(&streamed, vec![0, 1]).unwrap();
    blocks.block(0).unwrap();
    let err = blocks.block(0).err().unwrap().to_string();
    assert!(err.contains("expects Some(1)"), "{err}");
    assert!(BlockStreamer::new(&streamed, vec![4]).is_err());
}

#[test]
fn offloaded_share_of_blocks_is_spread_evenly() {
    let half = BlockOffload::from_percent(50.0, 40, 2).unwrap();
    assert_eq!(half.blocks, 20);
    let streamed = half.streamed(40);
    assert_eq!(streamed.iter().filter(|&&s| s).count(), 20);
    assert!(streamed.windows(2).all(|w| w[0] != w[1]), "alternating");
    let quarter = BlockOffload::from_percent(25.0, 40, 2)
        .unwrap()
        .streamed(40);
    assert_eq!(quarter.iter().filter(|&&s| s).count(), 10);
    // No two streamed blocks are adjacent at 25 %.
    assert!(quarter.windows(2).all(|w| !(w[0] && w[1])));
    assert!(BlockOffload::from_percent(100.0, 40, 2)
        .unwrap()
        .streamed(40)
        .iter()
        .all(|&s| s));
    assert!(BlockOffload::from_percent(0.0, 40, 2)
        .unwrap()
        .streamed(40)
        .iter()
        .all(|&s| !s));
    assert!(BlockOffload::from_percent(150.0, 40, 2).is_err());
}

#[test]
fn offload_and_load_round_trip() {
    single_threaded();
    for offload in [
        None,
        Some(BlockOffload {
            blocks: 2,
            ring_slots: 2,
        }),
    ] {
        let mut m = model(Fp8Mode::WeightOnly, offload);
        let (x, t, c, _) = inputs();
        let before = tch::no_grad(|| m.forward(&x, &t, &c, None)).unwrap();
        let bytes = m.weight_bytes();
        let total = bytes.device + bytes.host;
        assert_eq!(
            bytes.host,
            2 * m.blocks[1].bytes() * offload.is_some() as u64
        );

        let parked = m.offload().unwrap();
        assert!(m.is_parked());
        assert_eq!(m.weight_bytes().device, 0);
        assert_eq!(m.weight_bytes().host, total);
        // Streamed blocks are in host memory already: only the rest moves.
        assert_eq!(parked.bytes, bytes.device);
        let err = tch::no_grad(|| m.forward(&x, &t, &c, None))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("load_to"), "{err}");
        // Parking twice moves nothing.
        assert_eq!(m.offload().unwrap().bytes, 0);

        let loaded = m.load_to(Device::Cpu).unwrap();
        assert_eq!(loaded.bytes, bytes.device);
        assert!(!m.is_parked());
        assert_eq!(m.weight_bytes(), bytes);
        let after = tch::no_grad(|| m.forward(&x, &t, &c, None)).unwrap();
        assert_eq!(max_abs_diff(&after, &before), 0.0);
    }
}

/// Host copies share chunks (libtorch's pinned allocator would round each tensor up to a power of
/// two): small tensors are packed into one chunk at aligned offsets, a larger one gets its own.
#[test]
fn host_arena_packs_tensors_into_shared_chunks() {
    single_threaded();
    let mut arena = HostArena::with_chunk_bytes(Device::Cpu, 4096);
    let originals = [
        Tensor::randn([10, 10], (Kind::Float, Device::Cpu)),
        Tensor::randn([33], (Kind::Float, Device::Cpu)).to_kind(Kind::Float8e4m3fn),
        Tensor::randn([7], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16),
        Tensor::from(2.5f32),
        Tensor::from_slice(&[3i64, -1, 7]),
        Tensor::randn([2000], (Kind::Float, Device::Cpu)),
    ];
    let copies: Vec<Tensor> = originals
        .iter()
        .map(|t| arena.copy(t, false).unwrap())
        .collect();
    assert_eq!(
        arena.chunks(),
        2,
        "five small tensors in one chunk, the 8000-byte one alone"
    );
    assert_eq!(arena.reserved_bytes(), 4096 + 8000);
    let base = copies[0].data_ptr() as usize;
    for (original, copy) in originals.iter().zip(&copies) {
        assert_eq!(
            (copy.kind(), copy.size()),
            (original.kind(), original.size())
        );
        let bytes = |t: &Tensor| t.reshape([-1]).view_dtype(Kind::Uint8);
        assert!(bytes(copy).equal(&bytes(original)), "bytes differ");
        assert_ne!(copy.data_ptr(), original.data_ptr());
    }
    for copy in &copies[1..5] {
        let offset = copy.data_ptr() as usize - base;
        assert!(
            offset < 4096 && offset.is_multiple_of(256),
            "offset {offset}"
        );
    }
    // The copies own their memory: changing an original leaves them as they were.
    let before = copies[0].copy();
    let _ = originals[0].shallow_clone().fill_(0.0);
    assert!(copies[0].equal(&before));
}
