//! Starting, signalling and recognising trainer processes.
//!
//! The trainer is started from an argument vector (never a shell), in a session of its own so that
//! it outlives the UI and a Ctrl+C in the UI's terminal does not reach it. Its stdout and stderr
//! are appended to the job's log.txt.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The program the UI runs for a job: `<program> <args…> <job.yaml>`.
#[derive(Debug, Clone)]
pub struct TrainerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl TrainerCommand {
    /// `wanlora train`, with this very executable as `wanlora`.
    pub fn current_exe_train() -> io::Result<Self> {
        Ok(TrainerCommand {
            program: std::env::current_exe()?,
            args: vec!["train".into()],
        })
    }
}

/// What one launch needs besides the command.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub job_id: i64,
    pub job_dir: &'a Path,
    pub yaml_path: &'a Path,
    /// Becomes CUDA_VISIBLE_DEVICES.
    pub gpu: &'a str,
    /// Extra environment (HF_TOKEN from the settings).
    pub env: Vec<(String, String)>,
}

/// `--gpus` for a launch on several GPUs: CUDA_VISIBLE_DEVICES=`gpu` renumbers them from 0, so
/// the trainer is given 0..n-1 (expert-parallel for both experts, data-parallel for one).
pub fn gpus_arg(gpu: &str) -> Option<String> {
    let n = gpu.split(',').filter(|g| !g.trim().is_empty()).count();
    (n > 1).then(|| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(","))
}

/// Starts the trainer for `launch`; the child is in a new session (its pid is its process group).
pub fn spawn(command: &TrainerCommand, launch: &Launch) -> io::Result<tokio::process::Child> {
    let log_path = launch.job_dir.join(crate::job_folder::LOG);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    writeln!(
        log,
        "[wanlora ui] starting {} {} {} (job {}, CUDA_VISIBLE_DEVICES={})",
        command.program.display(),
        command
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        launch.yaml_path.display(),
        launch.job_id,
        launch.gpu
    )?;
    let stderr = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args).arg(launch.yaml_path);
    if let Some(gpus) = gpus_arg(launch.gpu) {
        cmd.args(["--gpus", &gpus]);
    }
    cmd.current_dir(launch.job_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .env("CUDA_VISIBLE_DEVICES", launch.gpu)
        .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        .env("WANLORA_UI_JOB_ID", launch.job_id.to_string())
        // The UI's access token is no business of the trainer (nor of `${VAR}` in a job file).
        .env_remove("WANLORA_AUTH")
        .kill_on_drop(false);
    for (k, v) in &launch.env {
        cmd.env(k, v);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// True while a process with this pid exists and is not a zombie.
pub fn is_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie has exited; its parent just has not collected it yet.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// True when process `pid` is a trainer started for `yaml_path` (guards against a reused pid).
pub fn runs_job(pid: i64, yaml_path: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = yaml_path.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == want)
}

fn signal(pid: i64, sig: libc::c_int) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 0 {
        return Err(io::Error::other("refusing to signal a non-positive pid"));
    }
    // SAFETY: plain kill(2) on a checked positive pid.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// SIGINT to the trainer: it saves a checkpoint and exits.
pub fn interrupt(pid: i64) -> io::Result<()> {
    signal(pid, libc::SIGINT)
}

/// SIGKILL to the trainer's whole process group (it leads its own session).
pub fn kill_group(pid: i64) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 1 {
        return Err(io::Error::other("refusing to kill a system process group"));
    }
    // SAFETY: kill(2) with a negative pid addresses the group the trainer leads.
    if unsafe { libc::kill(-pid, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_visible_gpus_become_the_trainer_gpu_list() {
        assert_eq!(gpus_arg("0"), None);
        assert_eq!(gpus_arg(""), None);
        assert_eq!(gpus_arg("2,3").as_deref(), Some("0,1"));
        assert_eq!(gpus_arg("1,4,5").as_deref(), Some("0,1,2"));
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(is_alive(std::process::id() as i64));
        assert!(!is_alive(0));
        assert!(!is_alive(-5));
        assert!(!is_alive(i64::MAX));
    }

    #[tokio::test]
    async fn spawned_trainer_leads_its_own_session_and_logs_to_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("job.yaml");
        std::fs::write(&yaml, "job: extension\n").unwrap();
        let command = TrainerCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo trainer $CUDA_VISIBLE_DEVICES; sleep 30".into(),
                "sh".into(),
            ],
        };
        let launch = Launch {
            job_id: 7,
            job_dir: dir.path(),
            yaml_path: &yaml,
            gpu: "3",
            env: vec![],
        };
        let mut child = spawn(&command, &launch).unwrap();
        let pid = child.id().unwrap() as i64;
        assert!(runs_job(pid, &yaml));
        assert!(!runs_job(pid, &dir.path().join("other.yaml")));
        // setsid: the child's session id is its own pid.
        let sid = unsafe { libc::getsid(pid as i32) };
        assert_eq!(sid as i64, pid);
        for _ in 0..50 {
            let log = std::fs::read_to_string(dir.path().join("log.txt")).unwrap();
            if log.contains("trainer 3") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("log.txt")).unwrap();
        assert!(log.starts_with("[wanlora ui] starting /bin/sh"), "{log}");
        assert!(log.contains("trainer 3"), "{log}");
        kill_group(pid).unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success());
        assert!(!is_alive(pid));
    }
}
