//! Data-parallel training over libtorch's gloo process group (`wanlora_torch::dist`): `world`
//! processes train the same experts, each on its share of every batch (entry i of a batch goes to
//! rank i mod world), and average their flat LoRA gradient before the optimizer step, so every
//! rank holds the same LoRA. Timesteps and noise are drawn for the whole batch on every rank and
//! each keeps its entries', so the run equals one process training the whole batch. Rank 0 saves,
//! logs and writes the status; a stop asked of any rank stops all at the same step.

use std::time::Duration;
use tch::{Device, Tensor};
use wanlora_torch::dist::GlooGroup;

use crate::TrainError;
use wanlora_data::Catalog;

/// Every batch must split evenly over the ranks (each trains the same number of samples, so the
/// mean of their gradients is the whole batch's).
pub fn check_batches(catalog: &Catalog, world: u32) -> Result<(), TrainError> {
    for d in &catalog.datasets {
        if d.batch_size.max(1) % world as usize != 0 {
            return Err(TrainError::Setup(format!(
                "dataset {}: batch size {} does not split over {world} data-parallel ranks; set train.batch_size \
                 (the batch of all ranks together) to a multiple of {world}",
                d.folder.display(),
                d.batch_size
            )));
        }
    }
    Ok(())
}

/// How long ranks wait for each other to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// This process's place in a data-parallel run.
pub struct DataRank {
    group: GlooGroup,
}

impl DataRank {
    pub fn join(host: &str, port: u16, rank: u32, world: u32) -> Result<DataRank, TrainError> {
        let group = GlooGroup::join(host, port, rank, world, JOIN_TIMEOUT)
            .map_err(|e| TrainError::Setup(format!("data-parallel: {e}")))?;
        Ok(DataRank { group })
    }

    pub fn rank(&self) -> u32 {
        self.group.rank()
    }

    pub fn world(&self) -> u32 {
        self.group.world()
    }

    /// Whether batch entry `index` is this rank's.
    pub fn owns(&self, index: usize) -> bool {
        index % self.world() as usize == self.rank() as usize
    }

    /// In place: `values` becomes the mean over the ranks (through host memory for CUDA tensors:
    /// gloo reduces CPU tensors).
    pub fn average(&self, values: &Tensor) -> Result<(), TrainError> {
        let device = values.device();
        let host = if device == Device::Cpu {
            values.shallow_clone()
        } else {
            values.to_device(Device::Cpu)
        };
        self.group
            .all_reduce_mean(&host)
            .map_err(|e| TrainError::Setup(format!("data-parallel: {e}")))?;
        if device != Device::Cpu {
            tch::no_grad(|| values.shallow_clone().copy_(&host));
        }
        Ok(())
    }

    /// The mean of `value` over the ranks.
    pub fn mean(&self, value: f64) -> Result<f64, TrainError> {
        let t = Tensor::from_slice(&[value]);
        self.average(&t)?;
        Ok(t.double_value(&[0]))
    }

    /// Whether any rank says yes (a stop asked of one stops all at the same step).
    pub fn any(&self, yes: bool) -> Result<bool, TrainError> {
        Ok(self.mean(if yes { 1.0 } else { 0.0 })? > 0.0)
    }
}
