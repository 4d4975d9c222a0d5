//! Facts about the machine that the CLI (`wanlora doctor`) and the web UI's dashboard both show.
//! Nothing here links libtorch: GPUs are read through NVML, which is loaded at run time.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// One GPU as NVML reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuStatus {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub utilization_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    pub power_watts: Option<f64>,
    pub driver_version: Option<String>,
}

/// The GPUs of this machine, or why none can be listed (no NVIDIA driver, NVML missing).
pub fn gpus() -> Result<Vec<GpuStatus>, String> {
    use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
    let nvml = nvml_wrapper::Nvml::init()
        .map_err(|e| format!("NVML not available ({e}): no NVIDIA driver on this machine"))?;
    let driver = nvml.sys_driver_version().ok();
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML could not count devices: {e}"))?;
    let mut out = Vec::new();
    for index in 0..count {
        let dev = nvml
            .device_by_index(index)
            .map_err(|e| format!("NVML device {index}: {e}"))?;
        let mem = dev.memory_info().ok();
        out.push(GpuStatus {
            index,
            name: dev.name().unwrap_or_else(|_| "unknown GPU".into()),
            memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
            memory_used_bytes: mem.as_ref().map_or(0, |m| m.used),
            utilization_percent: dev.utilization_rates().ok().map(|u| u.gpu),
            temperature_c: dev.temperature(TemperatureSensor::Gpu).ok(),
            power_watts: dev.power_usage().ok().map(|mw| mw as f64 / 1000.0),
            driver_version: driver.clone(),
        });
    }
    Ok(out)
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> Result<(u64, u64), String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: path has a NUL byte", path.display()))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a zeroed out-parameter of the right type.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(format!(
            "{}: statvfs failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let block = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}

/// The first line of `<tool> -version`, or why the tool is unusable.
pub fn tool_version(tool: &str) -> Result<String, String> {
    let out = Command::new(tool).arg("-version").output().map_err(|e| {
        format!("{tool} not found on PATH ({e}); install it with `apt-get install ffmpeg`")
    })?;
    if !out.status.success() {
        return Err(format!("{tool} -version exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

pub use wanlora_spec::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_of_tmp_is_positive_and_bounded() {
        let (free, total) = disk_space(Path::new("/tmp")).unwrap();
        assert!(total > 0);
        assert!(free <= total);
    }

    #[test]
    fn disk_space_of_missing_path_names_it() {
        let err = disk_space(Path::new("/definitely/not/here")).unwrap_err();
        assert!(err.contains("/definitely/not/here"), "{err}");
    }

    #[test]
    fn missing_tool_says_how_to_install() {
        let err = tool_version("wanlora-no-such-tool").unwrap_err();
        assert!(err.contains("not found"), "{err}");
    }
}
