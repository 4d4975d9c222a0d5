//! libtorch's distributed engine (c10d) from Rust: a process group of `world` ranks formed through
//! a TCPStore (rank 0 serves it on `host:port`), over gloo (CPU tensors) or NCCL (CUDA tensors) —
//! the groups PyTorch itself uses. What training needs of it: the mean of one flat tensor over all
//! ranks (in place) and a barrier. ProcessGroupNCCL is resolved at run time from libtorch_cuda.so
//! (csrc/dist.cpp says how), so asking for it on a CPU machine is an error, not a link failure.

use std::ffi::{c_char, c_void, CStr, CString};
use std::time::Duration;
use tch::{Device, Tensor};

mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn wl_dist_last_error() -> *const c_char;
        pub fn wl_dist_gloo_new(
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            join_ms: i64,
            collective_ms: i64,
            out: *mut *mut c_void,
        ) -> c_int;
        pub fn wl_dist_nccl_new(
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            join_ms: i64,
            collective_ms: i64,
            device: c_int,
            out: *mut *mut c_void,
        ) -> c_int;
        pub fn wl_dist_backend_name(group: *mut c_void, out: *mut c_char, capacity: c_int)
            -> c_int;
        pub fn wl_dist_allreduce_mean(group: *mut c_void, tensor: *mut c_void) -> c_int;
        pub fn wl_dist_barrier(group: *mut c_void) -> c_int;
        pub fn wl_dist_free(group: *mut c_void);
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DistError {
    #[error("rank {rank} of a world of {world}: ranks count from 0 to world-1")]
    BadRank { rank: u32, world: u32 },
    #[error("{host:?} is not a host name (it holds a NUL byte)")]
    BadHost { host: String },
    #[error("{transport} is not available here: {reason}")]
    Unavailable {
        transport: &'static str,
        reason: String,
    },
    #[error("rank {rank} could not join the process group at {host}:{port} within {seconds} s ({reason}); check MASTER_ADDR/MASTER_PORT, that rank 0 runs and that the port is free and reachable")]
    Join {
        rank: u32,
        host: String,
        port: u16,
        seconds: u64,
        reason: String,
    },
    #[error("{what} failed on rank {rank} ({reason}); a rank probably stopped — the job stops, run it again to resume")]
    Collective {
        what: &'static str,
        rank: u32,
        reason: String,
    },
    #[error(
        "the {transport} process group reduces tensors on {expected:?}; this one is on {given:?}"
    )]
    WrongDevice {
        transport: &'static str,
        expected: Device,
        given: Device,
    },
}

/// What carries a process group's collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// ProcessGroupGloo: tensors in host memory.
    Gloo,
    /// ProcessGroupNCCL: tensors on CUDA device `device` (one device per rank: NCCL refuses two
    /// ranks on one GPU).
    Nccl { device: usize },
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Gloo => "gloo",
            Transport::Nccl { .. } => "nccl",
        }
    }

    /// The device the group's tensors live on.
    pub fn device(self) -> Device {
        match self {
            Transport::Gloo => Device::Cpu,
            Transport::Nccl { device } => Device::Cuda(device),
        }
    }
}

fn last_error() -> String {
    // SAFETY: the helper returns a pointer to its thread-local, NUL-terminated message.
    unsafe { CStr::from_ptr(ffi::wl_dist_last_error() as *const c_char) }
        .to_string_lossy()
        .into_owned()
}

/// A process group: this process is `rank` of `world`.
pub struct ProcessGroup {
    handle: *mut c_void,
    transport: Transport,
    rank: u32,
    world: u32,
}

// SAFETY: the group is used from one thread at a time (&mut-free methods only call into c10d,
// whose process group is thread-safe for the collectives used here); it owns its handle.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group: rank 0 serves the TCPStore on `host:port`, every rank (0 included) connects
    /// and waits for all `world` ranks, up to `timeout`, which also bounds each collective.
    pub fn join(
        transport: Transport,
        host: &str,
        port: u16,
        rank: u32,
        world: u32,
        timeout: Duration,
    ) -> Result<ProcessGroup, DistError> {
        Self::join_with(transport, host, port, rank, world, timeout, timeout)
    }

    /// [`ProcessGroup::join`] with the rendezvous bounded by `join` and each collective by
    /// `collective`.
    pub fn join_with(
        transport: Transport,
        host: &str,
        port: u16,
        rank: u32,
        world: u32,
        join: Duration,
        collective: Duration,
    ) -> Result<ProcessGroup, DistError> {
        let timeout = join;
        if rank >= world {
            return Err(DistError::BadRank { rank, world });
        }
        let c_host = CString::new(host).map_err(|_| DistError::BadHost {
            host: host.to_string(),
        })?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid C string and out pointer; the helper catches every C++ exception.
        let (port_c, rank_c, world_c) = (i32::from(port), rank as i32, world as i32);
        let (join_ms, collective_ms) = (join.as_millis() as i64, collective.as_millis() as i64);
        let rc = unsafe {
            match transport {
                Transport::Gloo => ffi::wl_dist_gloo_new(
                    c_host.as_ptr(),
                    port_c,
                    rank_c,
                    world_c,
                    join_ms,
                    collective_ms,
                    &mut handle,
                ),
                Transport::Nccl { device } => ffi::wl_dist_nccl_new(
                    c_host.as_ptr(),
                    port_c,
                    rank_c,
                    world_c,
                    join_ms,
                    collective_ms,
                    device as i32,
                    &mut handle,
                ),
            }
        };
        if rc == -2 {
            return Err(DistError::Unavailable {
                transport: transport.name(),
                reason: last_error(),
            });
        }
        if rc != 0 {
            return Err(DistError::Join {
                rank,
                host: host.to_string(),
                port,
                seconds: timeout.as_secs(),
                reason: last_error(),
            });
        }
        Ok(ProcessGroup {
            handle,
            transport,
            rank,
            world,
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The backend's name as c10d reports it (`gloo`, `nccl`).
    pub fn backend_name(&self) -> Result<String, DistError> {
        let mut buf = [0 as c_char; 64];
        // SAFETY: the handle is live; the buffer's capacity is passed.
        let rc = unsafe { ffi::wl_dist_backend_name(self.handle, buf.as_mut_ptr(), 64) };
        self.check(rc, "backend name")?;
        // SAFETY: the helper wrote a NUL-terminated string within the buffer.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    pub fn rank(&self) -> u32 {
        self.rank
    }

    pub fn world(&self) -> u32 {
        self.world
    }

    /// In place: `tensor` becomes the mean of its values over every rank (all-reduce sum / world).
    pub fn all_reduce_mean(&self, tensor: &Tensor) -> Result<(), DistError> {
        let expected = self.transport.device();
        if tensor.device() != expected {
            return Err(DistError::WrongDevice {
                transport: self.transport.name(),
                expected,
                given: tensor.device(),
            });
        }
        // SAFETY: the handle is live; the tensor pointer is tch's at::Tensor*, valid for the call.
        let rc =
            unsafe { ffi::wl_dist_allreduce_mean(self.handle, tensor.as_ptr() as *mut c_void) };
        self.check(rc, "all-reduce")
    }

    /// Returns when every rank has reached it.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: the handle is live.
        let rc = unsafe { ffi::wl_dist_barrier(self.handle) };
        self.check(rc, "barrier")
    }

    fn check(&self, rc: i32, what: &'static str) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        Err(DistError::Collective {
            what,
            rank: self.rank,
            reason: last_error(),
        })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from wl_dist_gloo_new / wl_dist_nccl_new and is freed once.
        unsafe { ffi::wl_dist_free(self.handle) }
    }
}
