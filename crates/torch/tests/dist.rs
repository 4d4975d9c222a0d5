//! libtorch's process groups through the helper. Gloo: two ranks (threads of this test, talking
//! over TCP through the TCPStore and gloo as separate processes would) average a tensor and meet at
//! a barrier; a rank that cannot reach the store, and a rank outside the world, are named errors.
//! NCCL: a group of one on the GPU averages in place; without CUDA, asking for it is a clear error.

use std::time::Duration;
use tch::{Kind, Tensor};
use wanlora_torch::dist::{DistError, ProcessGroup, Transport};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn two_ranks_average_a_flat_tensor_and_meet_at_a_barrier() {
    let port = free_port();
    let ranks: Vec<_> = (0..2u32)
        .map(|rank| {
            std::thread::spawn(move || {
                let group = ProcessGroup::join(
                    Transport::Gloo,
                    "127.0.0.1",
                    port,
                    rank,
                    2,
                    Duration::from_secs(30),
                )
                .unwrap();
                assert_eq!((group.rank(), group.world()), (rank, 2));
                assert_eq!(group.backend_name().unwrap(), "gloo");
                let values =
                    Tensor::arange(6, (Kind::Float, tch::Device::Cpu)) * f64::from(rank + 1);
                group.all_reduce_mean(&values).unwrap();
                group.barrier().unwrap();
                Vec::<f32>::try_from(&values).unwrap()
            })
        })
        .collect();
    let results: Vec<Vec<f32>> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    let expected: Vec<f32> = (0..6).map(|i| i as f32 * 1.5).collect();
    assert_eq!(results[0], expected);
    assert_eq!(results[1], expected);
}

#[test]
fn a_rank_that_cannot_reach_the_store_or_is_outside_the_world_is_refused() {
    assert_eq!(
        ProcessGroup::join(
            Transport::Gloo,
            "127.0.0.1",
            1,
            2,
            2,
            Duration::from_secs(1)
        )
        .err(),
        Some(DistError::BadRank { rank: 2, world: 2 })
    );
    // Rank 1 with no rank 0 serving the store: an error naming where it looked, after the timeout.
    let port = free_port();
    let err = ProcessGroup::join(
        Transport::Gloo,
        "127.0.0.1",
        port,
        1,
        2,
        Duration::from_secs(1),
    )
    .err()
    .expect("no store to join");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("MASTER_ADDR"),
        "{message}"
    );
}

#[test]
fn a_tensor_on_another_device_than_the_groups_is_refused() {
    let port = free_port();
    let group = ProcessGroup::join(
        Transport::Gloo,
        "127.0.0.1",
        port,
        0,
        1,
        Duration::from_secs(30),
    )
    .unwrap();
    let values = Tensor::arange(4, (Kind::Float, tch::Device::Cpu));
    group.all_reduce_mean(&values).unwrap();
    assert_eq!(Vec::<f32>::try_from(&values).unwrap(), [0.0, 1.0, 2.0, 3.0]);
    if tch::Cuda::is_available() {
        let on_gpu = values.to_device(tch::Device::Cuda(0));
        assert!(matches!(
            group.all_reduce_mean(&on_gpu),
            Err(DistError::WrongDevice { .. })
        ));
    }
}

/// On the GPU machine (scripts/gpu/dist.sh): ProcessGroupNCCL, resolved from libtorch_cuda.so at
/// run time, forms a world of one on cuda:0 and averages in place. Without CUDA: the join names
/// what is missing.
#[test]
fn cuda_nccl_group_of_one_or_a_clear_error_without_cuda() {
    wanlora_torch::init();
    let port = free_port();
    let joined = ProcessGroup::join(
        Transport::Nccl { device: 0 },
        "127.0.0.1",
        port,
        0,
        1,
        Duration::from_secs(60),
    );
    if !tch::Cuda::is_available() {
        // Without libtorch_cuda.so (CI): ProcessGroupNCCL is not there. With it but no GPU (a
        // CUDA build of libtorch on a CPU machine): its constructor refuses, which also shows the
        // constructor was reached through dlsym and its exception came back as an error.
        match joined.err().expect("no NCCL without CUDA") {
            DistError::Unavailable { transport, reason } => {
                assert_eq!(transport, "nccl");
                assert!(
                    reason.contains("libtorch_cuda") && reason.contains("gloo"),
                    "{reason}"
                );
            }
            DistError::Join { reason, .. } => {
                assert!(reason.contains("no GPUs found"), "{reason}")
            }
            other => panic!("unexpected error: {other}"),
        }
        return;
    }
    let group = joined.expect("NCCL world of one on cuda:0");
    assert_eq!(group.backend_name().unwrap(), "nccl");
    let values = Tensor::arange(6, (Kind::Float, tch::Device::Cuda(0))) * 2.0;
    group.all_reduce_mean(&values).unwrap();
    let expected: Vec<f32> = (0..6).map(|i| i as f32 * 2.0).collect();
    assert_eq!(
        Vec::<f32>::try_from(&values.to_device(tch::Device::Cpu)).unwrap(),
        expected
    );
    group.barrier().unwrap();
}
