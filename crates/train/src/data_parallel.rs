//! Data-parallel training over libtorch's process groups (`wanlora_torch::dist`): `world`
//! processes train the same experts, each on its share of every batch (entry i of a batch goes to
//! rank i mod world), and average their flat LoRA gradient before the optimizer step, so every
//! rank holds the same LoRA. Timesteps and noise are drawn for the whole batch on every rank and
//! each keeps its entries', so the run equals one process training the whole batch. Rank 0 saves,
//! logs and writes the status; a stop asked of any rank stops all at the same step.
//!
//! The transport: NCCL when the ranks train on CUDA (the gradient stays on the GPU), gloo on the
//! CPU. `WANLORA_DIST_BACKEND=gloo` forces gloo on CUDA too (through host memory), which is what
//! two ranks sharing one GPU need (NCCL refuses that); `wanlora train --gpus 0,0` sets it.

use std::time::Duration;
use tch::{Device, Tensor};
use wanlora_torch::dist::{ProcessGroup, Transport};

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

/// How long a collective may wait: the other ranks wait out rank 0's previews, saves and
/// validation at their next all-reduce (in an expert-parallel group also the other expert's
/// hand-off), which on a small card can take hours. A rank that dies does not leave the others
/// waiting that long: gloo sees its connections close, and the supervisor that started the ranks
/// ends the rest of a group when one of them dies (NCCL would wait).
const COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// The environment variable that picks the transport (`auto`, `gloo`, `nccl`).
pub const BACKEND_VAR: &str = "WANLORA_DIST_BACKEND";

/// Which process group carries the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DistBackend {
    /// NCCL on CUDA, gloo on the CPU.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

impl DistBackend {
    pub fn name(self) -> &'static str {
        match self {
            DistBackend::Auto => "auto",
            DistBackend::Gloo => "gloo",
            DistBackend::Nccl => "nccl",
        }
    }

    /// The value of [`BACKEND_VAR`]; unset is `auto`.
    pub fn from_var(value: Option<&str>) -> Result<DistBackend, TrainError> {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => Ok(DistBackend::Auto),
            Some("gloo") => Ok(DistBackend::Gloo),
            Some("nccl") => Ok(DistBackend::Nccl),
            Some(other) => Err(TrainError::Setup(format!(
                "{BACKEND_VAR}={other:?} is not a process group; use auto (NCCL on GPUs, gloo on CPUs), gloo or nccl"
            ))),
        }
    }

    /// The backend for ranks on `devices` (one entry per rank of one machine: GPU indices or
    /// device names): `auto` becomes gloo when a device is listed twice, since NCCL cannot put two
    /// ranks on one GPU; asking for NCCL then is an error.
    pub fn for_devices<T: PartialEq + std::fmt::Debug>(
        self,
        devices: &[T],
    ) -> Result<DistBackend, TrainError> {
        let shared = devices
            .iter()
            .enumerate()
            .any(|(i, d)| devices[..i].contains(d));
        match (self, shared) {
            (DistBackend::Auto, true) => Ok(DistBackend::Gloo),
            (DistBackend::Nccl, true) => Err(TrainError::Setup(format!(
                "{BACKEND_VAR}=nccl with devices {devices:?}: NCCL cannot put two ranks on one GPU; list each GPU \
                 once, or use gloo"
            ))),
            (b, _) => Ok(b),
        }
    }

    /// The transport for a rank training on `device`.
    fn transport(self, device: Device) -> Result<Transport, TrainError> {
        match (self, device) {
            (DistBackend::Gloo, _) | (DistBackend::Auto, Device::Cpu) => Ok(Transport::Gloo),
            (DistBackend::Nccl | DistBackend::Auto, Device::Cuda(index)) => {
                Ok(Transport::Nccl { device: index })
            }
            (DistBackend::Nccl, _) => Err(TrainError::Setup(format!(
                "{BACKEND_VAR}=nccl, but this rank trains on {device:?}; NCCL reduces CUDA tensors — use gloo \
                 or auto on CPUs"
            ))),
            (DistBackend::Auto, other) => Err(TrainError::Setup(format!(
                "data-parallel training on {other:?} is not supported; use CUDA GPUs or the CPU"
            ))),
        }
    }
}

/// `n` different free TCP ports on this machine for groups' stores (each group's rank 0 serves
/// its store there): all are held open until every one is chosen, so no two are the same.
pub fn free_local_ports(n: usize) -> Result<Vec<u16>, TrainError> {
    let no_port = |e: std::io::Error| {
        TrainError::Setup(format!("no free local port for a data-parallel group: {e}"))
    };
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(no_port)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(no_port))
        .collect()
}

/// A free TCP port on this machine for a group's store.
pub fn free_local_port() -> Result<u16, TrainError> {
    Ok(free_local_ports(1)?[0])
}

/// A process's place in a data-parallel group: `rank` of `world`, the group's store served by
/// rank 0 at `master_addr:master_port`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPlace {
    pub rank: u32,
    pub world: u32,
    pub master_addr: String,
    pub master_port: u16,
    pub backend: DistBackend,
}

/// This process's place in a data-parallel run.
pub struct DataRank {
    group: ProcessGroup,
}

impl DataRank {
    /// Joins the group of `place` for a rank that trains on `device`.
    pub fn join(place: &DataPlace, device: Device) -> Result<DataRank, TrainError> {
        let transport = place.backend.transport(device)?;
        let group = ProcessGroup::join_with(
            transport,
            &place.master_addr,
            place.master_port,
            place.rank,
            place.world,
            JOIN_TIMEOUT,
            COLLECTIVE_TIMEOUT,
        )
        .map_err(|e| TrainError::Setup(format!("data-parallel ({}): {e}", transport.name())))?;
        Ok(DataRank { group })
    }

    /// `gloo` or `nccl`.
    pub fn transport(&self) -> &'static str {
        self.group.transport().name()
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

    /// In place: `values` becomes the mean over the ranks (through the group's device: host memory
    /// for gloo with CUDA tensors).
    pub fn average(&self, values: &Tensor) -> Result<(), TrainError> {
        let device = values.device();
        let on = self.group.transport().device();
        let moved = if device == on {
            values.shallow_clone()
        } else {
            values.to_device(on)
        };
        self.group
            .all_reduce_mean(&moved)
            .map_err(|e| TrainError::Setup(format!("data-parallel: {e}")))?;
        if device != on {
            tch::no_grad(|| values.shallow_clone().copy_(&moved));
        }
        Ok(())
    }

    /// The mean of each of `values` over the ranks, in one all-reduce.
    pub fn means<const N: usize>(&self, values: [f64; N]) -> Result<[f64; N], TrainError> {
        let t = Tensor::from_slice(&values).to_device(self.group.transport().device());
        self.average(&t)?;
        let host = Vec::<f64>::try_from(&t.to_device(Device::Cpu))
            .map_err(|e| TrainError::Setup(format!("data-parallel: reading the means: {e}")))?;
        let mut out = [0.0; N];
        out.copy_from_slice(&host);
        Ok(out)
    }

    /// The mean of `value` over the ranks.
    pub fn mean(&self, value: f64) -> Result<f64, TrainError> {
        Ok(self.means([value])?[0])
    }

    /// Whether any rank says yes (a stop asked of one stops all at the same step).
    pub fn any(&self, yes: bool) -> Result<bool, TrainError> {
        Ok(self.mean(if yes { 1.0 } else { 0.0 })? > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_variable_reads_or_names_what_is_wrong() {
        assert_eq!(DistBackend::from_var(None).unwrap(), DistBackend::Auto);
        assert_eq!(
            DistBackend::from_var(Some(" nccl")).unwrap(),
            DistBackend::Nccl
        );
        assert_eq!(
            DistBackend::from_var(Some("gloo")).unwrap(),
            DistBackend::Gloo
        );
        let message = DistBackend::from_var(Some("mpi")).unwrap_err().to_string();
        assert!(
            message.contains("WANLORA_DIST_BACKEND=\"mpi\""),
            "{message}"
        );
    }

    #[test]
    fn nccl_on_gpus_gloo_on_cpus_and_on_a_shared_gpu() {
        let auto = DistBackend::Auto;
        assert_eq!(
            auto.transport(Device::Cuda(3)).unwrap(),
            Transport::Nccl { device: 3 }
        );
        assert_eq!(auto.transport(Device::Cpu).unwrap(), Transport::Gloo);
        assert_eq!(
            DistBackend::Gloo.transport(Device::Cuda(0)).unwrap(),
            Transport::Gloo
        );
        assert!(DistBackend::Nccl.transport(Device::Cpu).is_err());
        assert_eq!(auto.for_devices(&[0, 1]).unwrap(), DistBackend::Auto);
        assert_eq!(auto.for_devices(&[0, 0]).unwrap(), DistBackend::Gloo);
        let message = DistBackend::Nccl
            .for_devices(&[1, 1])
            .unwrap_err()
            .to_string();
        assert!(message.contains("two ranks on one GPU"), "{message}");
    }
}
