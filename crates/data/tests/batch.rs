//! Batch order: one bucket per batch, seeded per epoch, exactly resumable.

mod common;

use common::*;
use std::collections::HashMap;
use wanlora_data::{BatchEntry, BatchSampler, Catalog, DatasetSpec, JobContext, SamplerError};

/// 7 square, 4 wide and 2 tall images in one dataset at resolution 64, plus 3 in a reg dataset.
fn catalog(dir: &std::path::Path, seed: u64, extra_file: bool) -> Catalog {
    let main = dir.join("main");
    let reg = dir.join("reg");
    for i in 0..7 {
        solid_image(&main.join(format!("sq{i}.png")), 64, 64, [i, 0, 0]);
    }
    for i in 0..4 {
        solid_image(&main.join(format!("wide{i}.png")), 128, 64, [0, i, 0]);
    }
    for i in 0..2 {
        solid_image(&main.join(format!("tall{i}.png")), 64, 128, [0, 0, i]);
    }
    for i in 0..3 {
        solid_image(&reg.join(format!("r{i}.png")), 64, 64, [i, i, i]);
    }
    if extra_file {
        solid_image(&main.join("sq_extra.png"), 64, 64, [9, 9, 9]);
    }
    let main_spec = DatasetSpec {
        folder_path: main,
        resolutions: vec![64],
        num_repeats: 2,
        batch_size: Some(3),
        ..DatasetSpec::default()
    };
    let reg_spec = DatasetSpec {
        folder_path: reg,
        resolutions: vec![64],
        is_reg: true,
        ..DatasetSpec::default()
    };
    let job = JobContext {
        name: "t".into(),
        seed,
        batch_size: 1,
        ..JobContext::default()
    };
    Catalog::load(&[main_spec, reg_spec], &job).unwrap()
}

#[test]
fn batches_stay_in_one_bucket_and_cover_every_item_each_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog(dir.path(), 7, false);
    let sampler = BatchSampler::new(&catalog, |i| !i.is_reg).unwrap();
    // Groups: 14 square entries → 5 batches, 8 wide → 3, 4 tall → 2 (with padding).
    assert_eq!(sampler.batches_per_epoch(), 10);
    for epoch in 0..3 {
        let batches = sampler.epoch_batches(epoch);
        let mut seen: HashMap<BatchEntry, usize> = HashMap::new();
        for batch in &batches {
            assert_eq!(batch.entries.len(), 3);
            for entry in &batch.entries {
                let item = &catalog.items[entry.item];
                assert_eq!(item.bucket, batch.bucket);
                assert_eq!(item.dataset, batch.dataset);
                assert!(!item.is_reg);
                *seen.entry(*entry).or_default() += 1;
            }
        }
        // 13 files × 2 repeats, each at least once; only padding repeats an entry.
        assert_eq!(seen.len(), 26);
        assert_eq!(seen.values().sum::<usize>(), 30);
    }
    // Reg items only in the reg sampler.
    let reg = BatchSampler::new(&catalog, |i| i.is_reg).unwrap();
    assert_eq!(reg.batches_per_epoch(), 3);
    assert!(matches!(
        BatchSampler::new(&catalog, |_| false),
        Err(SamplerError::Empty)
    ));
}

#[test]
fn order_is_a_function_of_seed_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let a = catalog(&dir.path().join("a"), 7, false);
    let b = catalog(&dir.path().join("b"), 8, false);
    let s7 = BatchSampler::new(&a, |i| !i.is_reg).unwrap();
    let s7_again = BatchSampler::new(&a, |i| !i.is_reg).unwrap();
    let s8 = BatchSampler::new(&b, |i| !i.is_reg).unwrap();
    assert_eq!(s7.epoch_batches(0), s7_again.epoch_batches(0));
    assert_ne!(s7.epoch_batches(0), s7.epoch_batches(1));
    assert_ne!(s7.epoch_batches(0), s8.epoch_batches(0));
}

#[test]
fn a_restored_sampler_continues_with_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog(dir.path(), 3, false);
    let mut original = BatchSampler::new(&catalog, |i| !i.is_reg).unwrap();
    for _ in 0..7 {
        original.next_batch();
    }
    let saved = original.state();
    assert_eq!((saved.epoch, saved.position), (0, 7));
    // Through the end of epoch 0 and into epoch 2.
    let expected: Vec<_> = (0..18).map(|_| original.next_batch()).collect();
    assert_eq!(original.epoch(), 2);

    let json = serde_json::to_string(&saved).unwrap();
    let mut resumed = BatchSampler::new(&catalog, |i| !i.is_reg).unwrap();
    resumed
        .restore(&serde_json::from_str(&json).unwrap())
        .unwrap();
    let got: Vec<_> = (0..18).map(|_| resumed.next_batch()).collect();
    assert_eq!(got, expected);

    // The same sequence also equals the epochs laid end to end.
    let mut flat = catalog_epochs(&resumed, 0..3);
    let tail: Vec<_> = flat.drain(7..25).collect();
    assert_eq!(tail, expected);

    // State at an epoch boundary.
    let mut at_end = BatchSampler::new(&catalog, |i| !i.is_reg).unwrap();
    for _ in 0..10 {
        at_end.next_batch();
    }
    let boundary = at_end.state();
    let next = at_end.next_batch();
    let mut again = BatchSampler::new(&catalog, |i| !i.is_reg).unwrap();
    again.restore(&boundary).unwrap();
    assert_eq!(again.next_batch(), next);
}

fn catalog_epochs(
    sampler: &BatchSampler,
    epochs: std::ops::Range<u64>,
) -> Vec<wanlora_data::Batch> {
    epochs.flat_map(|e| sampler.epoch_batches(e)).collect()
}

#[test]
fn restoring_onto_changed_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let before = catalog(dir.path(), 3, false);
    // The same folders, unchanged: the state restores.
    let same = catalog(dir.path(), 3, false);
    // One more file in the folder.
    let after = catalog(dir.path(), 3, true);
    let mut sampler = BatchSampler::new(&before, |i| !i.is_reg).unwrap();
    sampler.next_batch();
    let state = sampler.state();
    BatchSampler::new(&same, |i| !i.is_reg)
        .unwrap()
        .restore(&state)
        .unwrap();
    let mut changed = BatchSampler::new(&after, |i| !i.is_reg).unwrap();
    assert!(matches!(
        changed.restore(&state),
        Err(SamplerError::DatasetChanged { .. })
    ));
    let mut bad = state.clone();
    bad.position = 1000;
    assert!(matches!(
        sampler.restore(&bad),
        Err(SamplerError::PositionOutOfRange { .. })
    ));
}

#[test]
fn streams_are_independent_orders_that_restore_alike() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog(dir.path(), 7, false);
    let base = BatchSampler::new(&catalog, |i| !i.is_reg).unwrap();
    let (mut high, low) = (base.clone().with_stream(1), base.clone().with_stream(2));
    assert_ne!(high.epoch_batches(0), low.epoch_batches(0));
    assert_ne!(high.epoch_batches(0), base.epoch_batches(0));
    assert_eq!(
        high.epoch_batches(3),
        base.clone().with_stream(1).epoch_batches(3)
    );
    // A stream restores like the plain sampler: the same batches after the saved position.
    for _ in 0..4 {
        high.next_batch();
    }
    let saved = high.state();
    let expected: Vec<_> = (0..12).map(|_| high.next_batch()).collect();
    let mut resumed = base.with_stream(1);
    resumed.restore(&saved).unwrap();
    let got: Vec<_> = (0..12).map(|_| resumed.next_batch()).collect();
    assert_eq!(got, expected);
}
