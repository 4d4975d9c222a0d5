//! `wanlora train JOB.yaml`: runs a whole AI Toolkit-style job; running it again on the same output
//! folder resumes where it stopped.

use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use wanlora_hub::HubConfig;
use wanlora_spec::expert::Expert;
use wanlora_train::data_parallel::{DataPlace, DistBackend, BACKEND_VAR};
use wanlora_train::expert_parallel::{self, JobPart, Rank};
use wanlora_train::trainer::{train, train_part, RunOptions};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The job file (AI Toolkit YAML or JSON).
    pub job: PathBuf,
    /// No progress bar (log lines every `logging.log_every` steps instead).
    #[arg(long)]
    pub no_progress: bool,
    /// Caps this process's GPU memory (the caching allocator) at G GiB, e.g. 24 to stand for a
    /// 24 GB card; `keep_blocks`/`keep_attention: auto` plan within the cap.
    #[arg(long, env = "WANLORA_MEMORY_CAP_GIB")]
    pub memory_cap_gib: Option<f64>,
    /// The GPUs to train on, instead of `train.gpus`: one (`1`), or two (`0,1`) with both experts
    /// trained, each expert in its own process on its own GPU at the same time.
    #[arg(long, value_name = "A,B")]
    pub gpus: Option<String>,
    /// Set by an expert-parallel supervisor in the processes it starts: the expert this one trains.
    #[arg(long, hide = true, requires_all = ["rank_device", "rank_seed", "supervisor"])]
    pub expert_rank: Option<String>,
    #[arg(long, hide = true)]
    pub rank_device: Option<String>,
    #[arg(long, hide = true)]
    pub rank_seed: Option<u64>,
    #[arg(long, hide = true)]
    pub supervisor: Option<u32>,
    /// Set with `--expert-rank` when the expert trains on several GPUs: this process's place in
    /// the expert's data-parallel group (rank, world size, the store's local port, the backend).
    #[arg(long, hide = true, requires_all = ["expert_rank", "data_world", "data_port", "data_backend"])]
    pub data_rank: Option<u32>,
    #[arg(long, hide = true)]
    pub data_world: Option<u32>,
    #[arg(long, hide = true)]
    pub data_port: Option<u16>,
    #[arg(long, hide = true)]
    pub data_backend: Option<String>,
}

/// The process-group backend the environment asks for ([`BACKEND_VAR`]).
fn backend_from_env() -> Result<DistBackend> {
    Ok(DistBackend::from_var(
        std::env::var(BACKEND_VAR).ok().as_deref(),
    )?)
}

/// The expert an `--expert-rank` names.
fn expert_named(name: &str) -> Result<Expert> {
    Expert::BOTH
        .into_iter()
        .find(|e| e.name() == name)
        .with_context(|| format!("--expert-rank {name:?}: expected high_noise or low_noise"))
}

/// This process trains one expert of an expert-parallel job for the supervisor `args.supervisor`.
fn run_rank(args: &TrainArgs, job: wanlora_config::LoadedJob, name: &str) -> Result<()> {
    let (Some(device), Some(seed), Some(supervisor)) =
        (&args.rank_device, args.rank_seed, args.supervisor)
    else {
        anyhow::bail!("--expert-rank needs --rank-device, --rank-seed and --supervisor");
    };
    expert_parallel::stop_with_supervisor(supervisor);
    let data = match (args.data_rank, args.data_world, args.data_port) {
        (Some(rank), Some(world), Some(master_port)) => Some(DataPlace {
            rank,
            world,
            master_addr: "127.0.0.1".into(),
            master_port,
            backend: DistBackend::from_var(args.data_backend.as_deref())?,
        }),
        _ => None,
    };
    let part = JobPart::Expert {
        expert: expert_named(name)?,
        device: device.clone(),
        seed,
        data,
    };
    let opts = RunOptions {
        progress: false,
        stop_after: None,
        hub: HubConfig::from_env(),
    };
    train_part(job, opts, part)?;
    Ok(())
}

/// The command that starts `rank` of the expert-parallel job `job_file`: this executable again.
fn rank_command(job_file: &std::path::Path, rank: &Rank) -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("wanlora"));
    let mut c = std::process::Command::new(exe);
    c.arg("train")
        .arg(job_file)
        .args(["--no-progress", "--expert-rank", rank.expert.name()])
        .args(["--rank-device", &rank.device])
        .args(["--rank-seed", &rank.seed.to_string()])
        .args(["--supervisor", &std::process::id().to_string()]);
    if let Some(place) = &rank.data {
        c.args(["--data-rank", &place.rank.to_string()])
            .args(["--data-world", &place.world.to_string()])
            .args(["--data-port", &place.master_port.to_string()])
            .args(["--data-backend", place.backend.name()]);
    }
    c
}

pub fn run(args: TrainArgs) -> Result<()> {
    if let Some(gib) = args.memory_cap_gib {
        if !wanlora_torch::cuda_available() {
            anyhow::bail!(
                "--memory-cap-gib / WANLORA_MEMORY_CAP_GIB caps GPU memory, and CUDA is not available here; unset it"
            );
        }
        super::bench::step::cap_memory(gib)?;
    }
    let job = wanlora_config::load_job(&args.job)
        .with_context(|| format!("cannot use the job file {}", args.job.display()))?;
    let text = std::fs::read_to_string(&args.job).unwrap_or_default();
    for w in &job.warnings {
        eprintln!("{}", w.display_in(&text));
    }
    if let Some(name) = &args.expert_rank {
        return run_rank(&args, job, name);
    }
    // torchrun / Slurm / Kubernetes launches: checked before anything loads.
    let launch = wanlora_train::launch_env::LaunchEnv::from_vars(|k| std::env::var(k).ok())?;
    // A world of one trains as a plain run, unless a process group is asked for by name (the
    // one-GPU check of the NCCL path: WORLD_SIZE=1 WANLORA_DIST_BACKEND=nccl).
    let named_backend = std::env::var(BACKEND_VAR).is_ok_and(|b| !b.trim().is_empty());
    if let Some(launch) = launch.filter(|l| l.world_size > 1 || named_backend) {
        // A rank started by `run_data_parallel_here` stops (saving nothing: rank 0 saves) when its
        // starter dies.
        if let Some(starter) = std::env::var("WANLORA_SUPERVISOR")
            .ok()
            .and_then(|p| p.parse().ok())
        {
            expert_parallel::stop_with_supervisor(starter);
        }
        anyhow::ensure!(
            args.gpus.is_none() && job.job.process().train.gpus.len() < 2,
            "a data-parallel launch (WORLD_SIZE={}) runs one GPU per process (LOCAL_RANK); drop train.gpus / --gpus",
            launch.world_size
        );
        let part = JobPart::Data {
            place: DataPlace {
                rank: launch.rank,
                world: launch.world_size,
                master_addr: launch.master_addr,
                master_port: launch.master_port,
                backend: backend_from_env()?,
            },
            local_rank: launch.local_rank,
        };
        let opts = RunOptions {
            progress: false,
            stop_after: None,
            hub: HubConfig::from_env(),
        };
        let summary = train_part(job, opts, part)?;
        if launch.rank == 0 {
            eprintln!(
                "{}: {} steps, LoRA files in {}",
                if summary.stopped { "stopped" } else { "done" },
                summary.step,
                summary.output.display()
            );
        }
        return Ok(());
    }
    let mut job = job;
    let gpus = match &args.gpus {
        Some(list) => {
            let gpus = wanlora_config::parse_gpu_list(list).map_err(anyhow::Error::msg)?;
            let trained = wanlora_train::job::expert_schedule(&job.job).trained.len();
            if let Some((message, hint)) = wanlora_config::gpu_list_problem(&gpus, trained) {
                anyhow::bail!("--gpus {message}; {hint}");
            }
            gpus
        }
        None => job.job.process().train.gpus.clone(),
    };
    let opts = RunOptions {
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        stop_after: None,
        hub: HubConfig::from_env(),
    };
    if gpus.len() > 1 && wanlora_train::job::expert_schedule(&job.job).trained.len() == 1 {
        return run_data_parallel_here(&args, job, &gpus);
    }
    let summary = if expert_parallel::wants_expert_parallel(&job, &gpus)? {
        let devices = expert_parallel::rank_devices(&job.job.process().device, &gpus);
        let job_file = args.job.canonicalize().unwrap_or_else(|_| args.job.clone());
        expert_parallel::train_expert_parallel(job, opts, &devices, backend_from_env()?, &|rank| {
            rank_command(&job_file, rank)
        })?
    } else {
        // One GPU named: the job's device becomes that GPU.
        if let [gpu] = gpus[..] {
            if job.job.process().device.trim() != "cpu" {
                job.job.process_mut().device = format!("cuda:{gpu}");
            }
        }
        train(job, opts)?
    };
    if summary.stopped {
        eprintln!(
            "stopped at step {}; run the same command again to resume ({})",
            summary.step,
            summary.output.display()
        );
    } else {
        eprintln!(
            "done: {} steps, LoRA files in {}",
            summary.step,
            summary.output.display()
        );
        for f in &summary.files {
            eprintln!("  {}", f.display());
        }
    }
    Ok(())
}

/// One expert on several GPUs of this machine: this process is rank 0 of a data-parallel run (on
/// the first GPU) and starts ranks 1.. as `wanlora train` children with the launcher variables
/// (their process group at 127.0.0.1 on a free port). A rank that dies makes rank 0's next
/// all-reduce fail: the job is marked failed and resumes from its last save when run again.
fn run_data_parallel_here(
    args: &TrainArgs,
    job: wanlora_config::LoadedJob,
    gpus: &[u32],
) -> Result<()> {
    let port = wanlora_train::data_parallel::free_local_port()?;
    // Two ranks on one GPU (a functional check on a one-GPU machine) go over gloo.
    let backend = backend_from_env()?.for_devices(gpus)?;
    let world = gpus.len() as u32;
    let exe = std::env::current_exe().context("cannot find this executable to start the ranks")?;
    let mut children = Vec::new();
    for (rank, gpu) in gpus.iter().enumerate().skip(1) {
        let child = std::process::Command::new(&exe)
            .arg("train")
            .arg(&args.job)
            .arg("--no-progress")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", gpu.to_string())
            .env(BACKEND_VAR, backend.name())
            .env("WANLORA_SUPERVISOR", std::process::id().to_string())
            .spawn()
            .with_context(|| format!("cannot start data-parallel rank {rank}"))?;
        children.push(child);
    }
    let part = JobPart::Data {
        place: DataPlace {
            rank: 0,
            world,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            backend,
        },
        local_rank: gpus[0],
    };
    let opts = RunOptions {
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        stop_after: None,
        hub: HubConfig::from_env(),
    };
    let watch = RankWatch::start(children, wanlora_train::job::output_folder(&job.job));
    let result = train_part(job, opts, part);
    for mut child in watch.stop() {
        if result.is_err() {
            // The other ranks write nothing; rank 0's state is what the job resumes from.
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    let summary = result?;
    eprintln!(
        "{}: {} steps, LoRA files in {}",
        if summary.stopped { "stopped" } else { "done" },
        summary.step,
        summary.output.display()
    );
    Ok(())
}

/// Watches the ranks `run_data_parallel_here` started while this process (rank 0) trains: when one
/// dies, rank 0 cannot finish its next collective (gloo notices the closed connection by itself,
/// NCCL would wait until its timeout), so the other ranks are killed, the job is marked failed and
/// this process exits; running the job again resumes from rank 0's last save.
struct RankWatch {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<std::process::Child>>,
}

impl RankWatch {
    fn start(mut children: Vec<std::process::Child>, job_root: PathBuf) -> RankWatch {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = done.clone();
        let thread = std::thread::spawn(move || {
            while !seen.load(Ordering::SeqCst) {
                let died = children
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, c)| match c.try_wait() {
                        Ok(Some(status)) if !status.success() => Some((i + 1, status)),
                        _ => None,
                    });
                if let Some((rank, status)) = died {
                    // A rank also dies when rank 0 failed first and closed the group: rank 0's own
                    // error then ends the run (it is given time to), and says more.
                    let grace = std::time::Instant::now();
                    while grace.elapsed() < std::time::Duration::from_secs(15) {
                        if seen.load(Ordering::SeqCst) {
                            return children;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    for c in &mut children {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    let error = format!(
                        "data-parallel rank {rank} ended ({status}) during training; the job stops, run it again \
                         to resume from the last save"
                    );
                    eprintln!("error: {error}");
                    if let Ok(folder) = wanlora_train::output::JobFolder::create(&job_root) {
                        folder.mark_failed(&error);
                    }
                    std::process::exit(1);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            children
        });
        RankWatch { done, thread }
    }

    /// Ends the watch (training returned) and hands the children back.
    fn stop(self) -> Vec<std::process::Child> {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}
