//! Batch order: batches only ever hold items of one dataset and one bucket (size and frame
//! count), in an order that is a pure function of the seed and the epoch, so that a run resumed
//! from `(epoch, position)` sees exactly the batches it would have seen.
//!
//! Per epoch: each group's items (each repeated `num_repeats` times) are shuffled and cut into
//! batches, a short last batch being filled up from the front of the group's shuffled list (as
//! AI Toolkit pads short buckets); then all batches of the epoch are shuffled together.

use crate::bucket::BucketKey;
use crate::catalog::{Catalog, DataItem};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One occurrence of an item in an epoch: `repeat` tells the copies apart (caption dropout draws
/// for each copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchEntry {
    pub item: usize,
    pub repeat: u32,
}

/// Items trained together in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub dataset: usize,
    pub bucket: BucketKey,
    pub entries: Vec<BatchEntry>,
}

/// Where the sampler stands; saved with a checkpoint and given back to [`BatchSampler::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub epoch: u64,
    /// Index of the next batch within the epoch.
    pub position: usize,
    /// Identifies the item set and grouping, so a changed dataset is noticed on resume.
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("no items to draw batches from")]
    Empty,
    #[error("the datasets changed since the checkpoint was written (saved data order {saved}, now {current}): the exact data order cannot be resumed; restore the dataset folders or start the epoch afresh")]
    DatasetChanged { saved: String, current: String },
    #[error("saved position {position} is past the end of an epoch of {batches} batches")]
    PositionOutOfRange { position: usize, batches: usize },
}

#[derive(Debug, Clone)]
struct Group {
    dataset: usize,
    bucket: BucketKey,
    batch_size: usize,
    members: Vec<BatchEntry>,
}

/// Draws batches epoch after epoch.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    groups: Vec<Group>,
    seed: u64,
    epoch: u64,
    position: usize,
    order: Vec<Batch>,
    fingerprint: String,
}

impl BatchSampler {
    /// A sampler over the catalog's usable items for which `include` holds (e.g. `|i| !i.is_reg`
    /// for the training set and `|i| i.is_reg` for regularisation), seeded with the job seed.
    pub fn new(
        catalog: &Catalog,
        include: impl Fn(&DataItem) -> bool,
    ) -> Result<Self, SamplerError> {
        let mut grouped: BTreeMap<(usize, BucketKey), Vec<BatchEntry>> = BTreeMap::new();
        let mut hasher = Sha256::new();
        for item in catalog.usable_items().filter(|i| include(i)) {
            let members = grouped.entry((item.dataset, item.bucket)).or_default();
            for repeat in 0..item.num_repeats as u32 {
                members.push(BatchEntry {
                    item: item.id,
                    repeat,
                });
            }
            hasher.update(
                format!(
                    "{}|{}|{}|{}|{}|{}\n",
                    item.id,
                    item.dataset,
                    item.bucket,
                    item.num_repeats,
                    item.flip,
                    item.path.display()
                )
                .as_bytes(),
            );
        }
        if grouped.is_empty() {
            return Err(SamplerError::Empty);
        }
        let groups: Vec<Group> = grouped
            .into_iter()
            .map(|((dataset, bucket), members)| Group {
                dataset,
                bucket,
                batch_size: catalog.datasets[dataset].batch_size.max(1),
                members,
            })
            .collect();
        for g in &groups {
            hasher.update(format!("batch {} {}\n", g.dataset, g.batch_size).as_bytes());
        }
        let fingerprint = hex::encode(&hasher.finalize()[..8]);
        let mut sampler = Self {
            groups,
            seed: catalog.seed,
            epoch: 0,
            position: 0,
            order: Vec::new(),
            fingerprint,
        };
        sampler.order = sampler.epoch_batches(0);
        Ok(sampler)
    }

    /// The same sampler drawing from a data order of its own: `stream` (a trained expert, say)
    /// is mixed into the seed, so two streams over one item set are independent and each is a
    /// pure function of (seed, stream, batches drawn).
    pub fn with_stream(mut self, stream: u64) -> Self {
        self.seed = crate::rng::derive_seed(&[self.seed, 0x57EA, stream]);
        self.epoch = 0;
        self.position = 0;
        self.order = self.epoch_batches(0);
        self
    }

    /// All batches of `epoch`, in order.
    pub fn epoch_batches(&self, epoch: u64) -> Vec<Batch> {
        let mut batches = Vec::new();
        for (index, group) in self.groups.iter().enumerate() {
            let mut members = group.members.clone();
            SplitMix64::for_parts(&[self.seed, 0xB47C, epoch, index as u64]).shuffle(&mut members);
            for start in (0..members.len()).step_by(group.batch_size) {
                let entries = (0..group.batch_size)
                    .map(|k| members[(start + k) % members.len()])
                    .collect();
                batches.push(Batch {
                    dataset: group.dataset,
                    bucket: group.bucket,
                    entries,
                });
            }
        }
        SplitMix64::for_parts(&[self.seed, 0x0DE2, epoch]).shuffle(&mut batches);
        batches
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.order.len()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next batch; after the last batch of an epoch comes the first of the next.
    pub fn next_batch(&mut self) -> Batch {
        if self.position >= self.order.len() {
            self.epoch += 1;
            self.position = 0;
            self.order = self.epoch_batches(self.epoch);
        }
        let batch = self.order[self.position].clone();
        self.position += 1;
        batch
    }

    /// Where the sampler stands: the next [`BatchSampler::next_batch`] after a restore of this
    /// state returns the batch this sampler would return next.
    pub fn state(&self) -> SamplerState {
        SamplerState {
            epoch: self.epoch,
            position: self.position,
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Continues from a saved state. Fails if the items or their grouping changed since.
    pub fn restore(&mut self, state: &SamplerState) -> Result<(), SamplerError> {
        if state.fingerprint != self.fingerprint {
            return Err(SamplerError::DatasetChanged {
                saved: state.fingerprint.clone(),
                current: self.fingerprint.clone(),
            });
        }
        let order = self.epoch_batches(state.epoch);
        if state.position > order.len() {
            return Err(SamplerError::PositionOutOfRange {
                position: state.position,
                batches: order.len(),
            });
        }
        self.epoch = state.epoch;
        self.position = state.position;
        self.order = order;
        Ok(())
    }
}
