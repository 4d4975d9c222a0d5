//! Start-up of libtorch: the binary links only the CPU libraries; the CUDA back-end is registered by
//! `dlopen`ing `libtorch_cuda.so` (and `libc10_cuda.so`) when they are on the library path.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

/// What happened when the CUDA libraries were looked for.
#[derive(Debug, Clone)]
pub enum CudaLoad {
    /// `libtorch_cuda.so` was loaded; CUDA kernels are registered.
    Loaded,
    /// The libraries were not found or failed to load; the reason says which and why.
    Unavailable(String),
}

static CUDA_LOAD: OnceLock<CudaLoad> = OnceLock::new();

fn dlopen_global(name: &str) -> Result<(), String> {
    let c_name = CString::new(name).expect("library names have no NUL");
    // SAFETY: dlopen with a valid C string; the handle is intentionally leaked so the library
    // stays loaded for the life of the process.
    let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a valid C string or null right after a failed dlopen.
        let err = unsafe { libc::dlerror() };
        let msg = if err.is_null() {
            "unknown dlopen error".to_string()
        } else {
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(msg);
    }
    Ok(())
}

/// Loads the CUDA part of libtorch if it can be found. Call once at the very start of `main`,
/// before any tensor work; later calls return the first result. `WANLORA_NO_CUDA=1` skips it.
pub fn init() -> &'static CudaLoad {
    CUDA_LOAD.get_or_init(|| {
        if std::env::var_os("WANLORA_NO_CUDA").is_some_and(|v| v != "0") {
            return CudaLoad::Unavailable("WANLORA_NO_CUDA is set".into());
        }
        if let Err(e) = dlopen_global("libc10_cuda.so") {
            return CudaLoad::Unavailable(format!(
                "libc10_cuda.so not loadable ({e}); put a CUDA build of PyTorch 2.11's torch/lib on \
                 LD_LIBRARY_PATH to use the GPU"
            ));
        }
        match dlopen_global("libtorch_cuda.so") {
            Ok(()) => CudaLoad::Loaded,
            Err(e) => CudaLoad::Unavailable(format!("libtorch_cuda.so not loadable ({e})")),
        }
    })
}

/// The result of [`init`], if it ran.
pub fn cuda_load() -> Option<&'static CudaLoad> {
    CUDA_LOAD.get()
}

/// True when CUDA kernels are registered and a device is present.
pub fn cuda_available() -> bool {
    matches!(init(), CudaLoad::Loaded) && tch::Cuda::is_available()
}

/// The device training and inference use by default: the first GPU when there is one.
pub fn default_device() -> tch::Device {
    if cuda_available() {
        tch::Device::Cuda(0)
    } else {
        tch::Device::Cpu
    }
}
