//! Expert-parallel training: the two experts of a job train at the same time, each in a process of
//! its own on a device of its own (`train.gpus: [0, 1]`, `wanlora train JOB --gpus 0,1`). No
//! collectives: an expert's LoRA depends only on (seed, expert, that expert's steps), so each
//! process walks the job's steps, trains those of its expert and passes over the others', and
//! saves, validates and stops at the job's steps; the two LoRA files equal those of the
//! alternating run in one process.
//!
//! The supervisor (this module, in the `wanlora train` process the user started) holds the job's
//! lock and pid file, runs the cache pass once, starts one rank per expert and then, until both
//! end: hands `control/` requests and Ctrl+C on to both ranks (`ranks/<expert>/control/`), writes
//! the job's one status.json from theirs (`ranks/<expert>/status.json`), and stops the other rank
//! cleanly (it saves) when one dies. Both ranks append to the one metrics.jsonl and log.txt, the
//! expert named in each line; each keeps its states in `state/<expert>/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::checkpoint::{self, RunState};
use crate::data_parallel::{DataPlace, DistBackend};
use crate::experts::Expert;
use crate::job;
use crate::jobfiles;
use crate::lock::JobLock;
use crate::output::{self, Control, JobFolder, JobPhase, Status};
use crate::trainer::{RunOptions, RunSummary, Trainer};
use crate::TrainError;
use wanlora_config::LoadedJob;
use wanlora_spec::job_folder::{PREVIEW_HAND_OFFS, STATUS};

/// What of a job one process runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPart {
    /// The whole job in one process; the experts alternate.
    Whole,
    /// The set-up that fills the text and latent caches, which an expert-parallel supervisor runs
    /// once before its ranks start; trains nothing.
    Caches { seed: u64 },
    /// One expert of an expert-parallel job, on `device` (`cpu`, `cuda:N`), with the job's seed
    /// as the supervisor resolved it; with `data`, one rank of that expert's data-parallel group
    /// (several GPUs per expert).
    Expert {
        expert: Expert,
        device: String,
        seed: u64,
        data: Option<DataPlace>,
    },
    /// One rank of a data-parallel run (crate::data_parallel), launched with MASTER_ADDR,
    /// MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK; on CUDA it trains on `cuda:<local_rank>` (or the one GPU the launcher assigned it).
    Data { place: DataPlace, local_rank: u32 },
}

impl JobPart {
    /// Whether this process trains `expert`'s steps.
    pub fn trains(&self, expert: Expert) -> bool {
        match self {
            JobPart::Whole | JobPart::Data { .. } => true,
            JobPart::Caches { .. } => false,
            JobPart::Expert { expert: e, .. } => *e == expert,
        }
    }

    /// The expert of an expert-parallel rank.
    pub fn rank(&self) -> Option<Expert> {
        match self {
            JobPart::Expert { expert, .. } => Some(*expert),
            _ => None,
        }
    }

    /// The device an expert rank was given, instead of the job's `device` (`job_device`). A
    /// data-parallel rank's GPU comes from LOCAL_RANK and the visible GPUs, which the trainer's
    /// set-up chooses (`local_gpu`).
    pub fn device(&self, job_device: &str) -> String {
        match self {
            JobPart::Expert { device, .. } => device.clone(),
            _ => job_device.to_string(),
        }
    }

    /// This process's place in a data-parallel group, if it is in one.
    pub fn data_place(&self) -> Option<&DataPlace> {
        match self {
            JobPart::Data { place, .. } => Some(place),
            JobPart::Expert { data, .. } => data.as_ref(),
            JobPart::Whole | JobPart::Caches { .. } => None,
        }
    }

    /// A data-parallel rank other than 0: it trains, and leaves the job folder to its rank 0.
    pub fn is_quiet(&self) -> bool {
        self.data_place().is_some_and(|p| p.rank > 0)
    }

    /// The seed the supervisor resolved (so that a job without `training_seed` has one seed in
    /// all its processes).
    pub fn seed(&self) -> Option<u64> {
        match self {
            JobPart::Whole | JobPart::Data { .. } => None,
            JobPart::Caches { seed } | JobPart::Expert { seed, .. } => Some(*seed),
        }
    }
}

/// A seed for a job that names none.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(42, |d| d.as_nanos() as u64)
}

/// The state a part continues from. The whole job: its newest state in `state/` — and an error
/// when a rank saved a newer one of its own (the job was last run expert-parallel), rather than
/// silently going back. A rank: the newer of its own newest state and the whole job's.
pub(crate) fn previous_state(
    folder: &JobFolder,
    part: &JobPart,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<(RunState, PathBuf)>, TrainError> {
    let shared = checkpoint::latest_state_in(&folder.path("state"), warn)?;
    match part {
        JobPart::Caches { .. } => Ok(None),
        JobPart::Expert { .. } => {
            let own = checkpoint::latest_state_in(&folder.states(), warn)?;
            Ok(match (own, shared) {
                (Some(o), Some(s)) if s.0.step > o.0.step => Some(s),
                (Some(o), _) => Some(o),
                (None, s) => s,
            })
        }
        JobPart::Whole | JobPart::Data { .. } => {
            let at = shared.as_ref().map_or(0, |(run, _)| run.step);
            for expert in Expert::BOTH {
                let states = folder.path("state").join(expert.name());
                if let Some((run, _)) = checkpoint::latest_state_in(&states, warn)? {
                    if run.step > at {
                        return Err(TrainError::Setup(format!(
                            "{}: this job was last trained expert-parallel (its {} expert is saved at step {}, \
                             the one-process state at step {at}); resume it the same way (`train.gpus` or \
                             `wanlora train JOB --gpus A,B`), or delete {} to go back to step {at}",
                            folder.root.display(),
                            expert.name(),
                            run.step,
                            states.display()
                        )));
                    }
                }
            }
            Ok(shared)
        }
    }
}

/// One process of an expert-parallel job.
#[derive(Debug, Clone, PartialEq)]
pub struct Rank {
    pub expert: Expert,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The job's seed, the same in every rank.
    pub seed: u64,
    /// With several devices per expert: this rank's place in its expert's data-parallel group.
    pub data: Option<DataPlace>,
}

/// The devices of an expert-parallel job from `train.gpus` (or `--gpus`) and the job's `device`:
/// one rank per expert, on `cuda:<gpu>`, or on the CPU when the job's device is `cpu` (tests).
pub fn rank_devices(job_device: &str, gpus: &[u32]) -> Vec<String> {
    gpus.iter()
        .map(|g| {
            if job_device.trim() == "cpu" {
                "cpu".to_string()
            } else {
                format!("cuda:{g}")
            }
        })
        .collect()
}

/// Whether `gpus` asks for an expert-parallel run of `job` (an even number of GPUs, both experts
/// trained); an error for a list it cannot run.
pub fn wants_expert_parallel(job: &LoadedJob, gpus: &[u32]) -> Result<bool, TrainError> {
    let schedule = job::expert_schedule(&job.job);
    if gpus.len() < 2 || schedule.trained.len() == 1 {
        // One expert on several GPUs trains data-parallel (the CLI launches those ranks).
        return Ok(false);
    }
    match wanlora_config::gpu_list_problem(gpus, schedule.trained.len()) {
        None => Ok(true),
        Some((message, hint)) => Err(TrainError::Setup(format!("train.gpus {message}; {hint}"))),
    }
}

/// The ranks of an expert-parallel job on `devices` (an even number): the first half trains the
/// first trained expert (high noise), the second half the other; with more than one device per
/// expert each half is a data-parallel group of its own, with its own store on a free local port.
pub fn plan_ranks(
    trained: &[Expert],
    devices: &[String],
    seed: u64,
    backend: DistBackend,
) -> Result<Vec<Rank>, TrainError> {
    if trained.len() != 2 || devices.len() < 2 || !devices.len().is_multiple_of(2) {
        return Err(TrainError::Setup(format!(
            "expert-parallel training needs both experts trained and an even number of devices; this job trains \
             {} on {devices:?}",
            trained.len()
        )));
    }
    let per_expert = devices.len() / 2;
    let ports = if per_expert > 1 {
        crate::data_parallel::free_local_ports(trained.len())?
    } else {
        Vec::new()
    };
    let mut ranks = Vec::with_capacity(devices.len());
    for (g, (&expert, group)) in trained.iter().zip(devices.chunks(per_expert)).enumerate() {
        let data = if per_expert > 1 {
            Some((ports[g], backend.for_devices(group)?))
        } else {
            None
        };
        for (i, device) in group.iter().enumerate() {
            ranks.push(Rank {
                expert,
                device: device.clone(),
                seed,
                data: data.map(|(master_port, backend)| DataPlace {
                    rank: i as u32,
                    world: per_expert as u32,
                    master_addr: "127.0.0.1".into(),
                    master_port,
                    backend,
                }),
            });
        }
    }
    Ok(ranks)
}

/// Runs `job` expert-parallel: the cache pass here, then the ranks of [`plan_ranks`] started by
/// `command(rank)` (the CLI gives this executable's `train JOB --expert-rank …`), supervised until
/// all end. `devices` holds one device per rank, the high-noise expert's half first; `backend`
/// carries the gradients of an expert's group when it has several devices.
pub fn train_expert_parallel(
    job: LoadedJob,
    opts: RunOptions,
    devices: &[String],
    backend: DistBackend,
    command: &dyn Fn(&Rank) -> Command,
) -> Result<RunSummary, TrainError> {
    let schedule = job::expert_schedule(&job.job);
    // Checked before anything is written or loaded.
    plan_ranks(&schedule.trained, devices, 0, backend)?;
    let root = job::output_folder(&job.job);
    let lock = JobLock::acquire(&root)?;
    let folder = JobFolder::create(&root)?;
    output::install_sigint_handler();
    let seed = match saved_seed(&folder) {
        Some(s) => s,
        None => job.job.process().training_seed.unwrap_or_else(fresh_seed),
    };
    let half = devices.len() / 2;
    folder.log(&format!(
        "expert-parallel: {} on {}, {} on {}",
        schedule.trained[0].name(),
        devices[..half].join(", "),
        schedule.trained[1].name(),
        devices[half..].join(", ")
    ));
    // The cache pass once, before the ranks start; its models are freed before they load theirs.
    match Trainer::new_part(job.clone(), opts.clone(), JobPart::Caches { seed }) {
        Ok(caches) => drop(caches),
        Err(TrainError::StoppedDuringSetup { .. }) => {
            return Ok(RunSummary {
                output: root,
                step: 0,
                losses: Vec::new(),
                stopped: true,
                files: Vec::new(),
            })
        }
        Err(e) => return Err(e),
    }
    let total = job.job.process().train.steps as u64;
    let ranks = plan_ranks(&schedule.trained, devices, seed, backend)?;
    // Preview hand-offs of an earlier run (stopped between the two phases) are not finished.
    let _ = std::fs::remove_dir_all(root.join(PREVIEW_HAND_OFFS));
    let mut running = Vec::new();
    for rank in &ranks {
        let dir = JobFolder::rank_dir(&root, rank.expert);
        let _ = std::fs::remove_file(dir.join(STATUS));
        let control = dir.join("control");
        std::fs::create_dir_all(&control).map_err(|e| TrainError::io(&control, e))?;
        for c in Control::ALL {
            let _ = std::fs::remove_file(control.join(c.file_name()));
        }
        let child = command(rank).spawn().map_err(|e| {
            TrainError::Setup(format!("cannot start the {} rank: {e}", rank.expert.name()))
        })?;
        let place = rank.data.as_ref().map_or(String::new(), |p| {
            format!(
                " (rank {} of {} over {})",
                p.rank,
                p.world,
                p.backend.name()
            )
        });
        folder.log(&format!(
            "started the {} rank on {}{place} (pid {})",
            rank.expert.name(),
            rank.device,
            child.id()
        ));
        running.push((rank.clone(), Some(child)));
    }
    let outcome = supervise(&folder, &schedule, total, &mut running);
    drop(lock);
    outcome
}

/// The seed of any state saved by this job (one-process or either rank).
fn saved_seed(folder: &JobFolder) -> Option<u64> {
    let mut quiet = |_: &str| {};
    std::iter::once(folder.path("state"))
        .chain(Expert::BOTH.map(|e| folder.path("state").join(e.name())))
        .find_map(|dir| {
            checkpoint::latest_state_in(&dir, &mut quiet)
                .ok()
                .flatten()
                .map(|(run, _)| run.seed)
        })
}

/// How a rank ended.
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

/// Leaves a control request for every rank still running.
fn tell_ranks(root: &Path, running: &[(Rank, Option<Child>)], c: Control) {
    for (rank, child) in running {
        if child.is_some() {
            let path = JobFolder::rank_dir(root, rank.expert)
                .join("control")
                .join(c.file_name());
            let _ = std::fs::write(path, b"");
        }
    }
}

/// A rank's last status, if it wrote one.
fn rank_status(root: &Path, expert: Expert) -> Option<Status> {
    let text = std::fs::read_to_string(JobFolder::rank_dir(root, expert).join(STATUS)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The supervision loop: requests handed on, the job's status written from the ranks', a dead
/// rank stopping the others. Returns when every rank has ended.
fn supervise(
    folder: &JobFolder,
    schedule: &crate::experts::ExpertSchedule,
    total: u64,
    running: &mut [(Rank, Option<Child>)],
) -> Result<RunSummary, TrainError> {
    let root = folder.root.clone();
    let mut failure: Option<(Expert, String)> = None;
    let mut stop_sent = false;
    loop {
        for c in Control::ALL {
            if folder.take_control(c) {
                tell_ranks(&root, running, c);
                stop_sent |= c == Control::Stop;
            }
        }
        if output::interrupted() && !stop_sent {
            tell_ranks(&root, running, Control::Stop);
            stop_sent = true;
        }
        let mut failed_groups = Vec::new();
        for (rank, slot) in running.iter_mut() {
            let Some(child) = slot.as_mut() else { continue };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            *slot = None;
            let how = describe_exit(status);
            let place = rank.data.as_ref().map_or(String::new(), |p| {
                format!(" (rank {} of its group)", p.rank)
            });
            folder.log(&format!("the {} rank{place} {how}", rank.expert.name()));
            if !status.success() {
                if failure.is_none() {
                    failure = Some((rank.expert, how));
                }
                if rank.data.is_some() {
                    failed_groups.push(rank.expert);
                }
            }
        }
        // The rest of a group whose rank died cannot finish its collectives (NCCL would wait for
        // the dead rank until its timeout): it ends now, and resumes from its last save.
        for (rank, slot) in running.iter_mut() {
            if let Some(child) = slot
                .as_mut()
                .filter(|_| failed_groups.contains(&rank.expert))
            {
                let _ = child.kill();
                let _ = child.wait();
                *slot = None;
                folder.log(&format!(
                    "ended the {} rank on {}: a rank of its group died",
                    rank.expert.name(),
                    rank.device
                ));
            }
        }
        if failure.is_some() && !stop_sent {
            // The other rank saves where it is and exits: the job resumes from both states.
            tell_ranks(&root, running, Control::Stop);
            stop_sent = true;
        }
        // One status per expert: an expert's group writes it from its rank 0.
        let statuses: Vec<(Expert, Option<Status>)> = schedule
            .trained
            .iter()
            .map(|&e| (e, rank_status(&root, e)))
            .collect();
        let step = job_step(schedule, &statuses);
        if running.iter().all(|(_, c)| c.is_none()) {
            return finish(folder, schedule, total, step, &statuses, failure);
        }
        let _ = folder.write_status(&combined_status(schedule, total, step, &statuses));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The job's step: the optimizer steps both ranks have done together (as the alternating run
/// counts them).
fn job_step(
    schedule: &crate::experts::ExpertSchedule,
    statuses: &[(Expert, Option<Status>)],
) -> u64 {
    statuses
        .iter()
        .map(|(e, s)| {
            let at = s.as_ref().map_or(0, |s| s.step);
            schedule.steps_of(*e, at)
        })
        .sum()
}

fn combined_status(
    schedule: &crate::experts::ExpertSchedule,
    total: u64,
    step: u64,
    statuses: &[(Expert, Option<Status>)],
) -> Status {
    let message = statuses
        .iter()
        .map(|(e, s)| {
            let m = s.as_ref().map_or("starting", |s| s.message.as_str());
            format!("{}: {m}", e.name())
        })
        .collect::<Vec<_>>()
        .join(" · ");
    // Steps per second add up; the job ends when its slower rank does.
    let rates: Vec<(Expert, f64, u64)> = statuses
        .iter()
        .filter_map(|(e, s)| {
            let s = s.as_ref()?;
            Some((*e, s.seconds_per_step?, s.step))
        })
        .collect();
    let seconds_per_step = (!rates.is_empty()).then(|| {
        1.0 / rates
            .iter()
            .map(|(_, sps, _)| 1.0 / sps.max(1e-9))
            .sum::<f64>()
    });
    let eta_seconds = (!rates.is_empty()).then(|| {
        rates
            .iter()
            .map(|&(e, sps, at)| {
                sps * schedule
                    .steps_of(e, total)
                    .saturating_sub(schedule.steps_of(e, at)) as f64
            })
            .fold(0.0, f64::max)
    });
    let training = statuses.iter().any(|(_, s)| {
        s.as_ref()
            .is_some_and(|s| matches!(s.state, JobPhase::Training | JobPhase::Saving))
    });
    // A rank rendering previews while the other trains shows in the message; both (the previews
    // at step 0) make the job's phase Sampling.
    let sampling = statuses
        .iter()
        .any(|(_, s)| s.as_ref().is_some_and(|s| s.state == JobPhase::Sampling));
    let phase = if training {
        JobPhase::Training
    } else if sampling {
        JobPhase::Sampling
    } else {
        JobPhase::Starting
    };
    Status {
        seconds_per_step,
        eta_seconds,
        ..Status::at(phase, step, total, &message)
    }
}

/// The job's end: completed when both ranks completed, failed when one died (the other was
/// stopped and saved), stopped otherwise.
fn finish(
    folder: &JobFolder,
    schedule: &crate::experts::ExpertSchedule,
    total: u64,
    step: u64,
    statuses: &[(Expert, Option<Status>)],
    failure: Option<(Expert, String)>,
) -> Result<RunSummary, TrainError> {
    crate::trainer::save::write_loss_plot(folder);
    let completed = statuses
        .iter()
        .all(|(_, s)| s.as_ref().is_some_and(|s| s.state == JobPhase::Completed));
    let mut status = Status::at(
        JobPhase::Stopped,
        step,
        total,
        "Stopped; resume by running the job again",
    );
    let result = if let Some((expert, how)) = failure {
        let reason = statuses
            .iter()
            .find(|(e, _)| *e == expert)
            .and_then(|(_, s)| s.as_ref()?.error.clone());
        let e = TrainError::RankFailed {
            expert: expert.name(),
            how,
            reason: reason.unwrap_or_else(|| "see log.txt".into()),
        };
        status.state = JobPhase::Failed;
        status.message = "Failed".into();
        status.error = Some(e.to_string());
        folder.log(&format!("failed: {e}"));
        Err(e)
    } else {
        if completed {
            status.state = JobPhase::Completed;
            status.message = "Done".into();
        }
        let name = &folder
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files = if completed {
            schedule
                .trained
                .iter()
                .flat_map(|&e| {
                    [false, true].map(|ema| checkpoint::lora_file_name(name, None, e, ema))
                })
                .map(|f| folder.path(&f))
                .filter(|p| p.exists())
                .collect()
        } else {
            Vec::new()
        };
        Ok(RunSummary {
            output: folder.root.clone(),
            step,
            losses: Vec::new(),
            stopped: !completed,
            files,
        })
    };
    folder.write_final_status(&status);
    folder.remove_pid();
    let _ = std::fs::remove_dir_all(folder.path(PREVIEW_HAND_OFFS));
    for stale in jobfiles::remove_stale_temp_files(&folder.root) {
        folder.log(&format!(
            "removed {} (left by a killed rank)",
            stale.display()
        ));
    }
    result
}

/// In a rank: asks the kernel for SIGINT when the supervisor dies, so that a rank never trains on
/// unsupervised (it saves and stops as on Ctrl+C). Exits at once if the supervisor is already gone.
pub fn stop_with_supervisor(supervisor: u32) {
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag of this process; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
        if libc::getppid() as u32 != supervisor {
            libc::raise(libc::SIGINT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experts::ExpertSchedule;

    #[test]
    fn the_job_step_counts_both_ranks_steps() {
        let schedule = ExpertSchedule::new(true, true, 2);
        let at = |step: u64| {
            Some(Status {
                step,
                ..Status::default()
            })
        };
        // High at job step 6 has done steps 0, 1, 4, 5; low at 3 has done step 2.
        assert_eq!(
            job_step(&schedule, &[(Expert::High, at(6)), (Expert::Low, at(3))]),
            5
        );
        assert_eq!(
            job_step(&schedule, &[(Expert::High, None), (Expert::Low, None)]),
            0
        );
    }

    #[test]
    fn a_rank_rendering_previews_shows_in_the_jobs_status() {
        let schedule = ExpertSchedule::new(true, true, 2);
        let rank = |state, message: &str| {
            Some(Status {
                step: 3,
                ..Status::at(state, 3, 6, message)
            })
        };
        let waiting = "Waiting for sample 1/1's high-noise phase from the other rank";
        let both = combined_status(
            &schedule,
            6,
            3,
            &[
                (Expert::High, rank(JobPhase::Training, "loss 0.1")),
                (Expert::Low, rank(JobPhase::Sampling, waiting)),
            ],
        );
        assert_eq!(both.state, JobPhase::Training);
        assert_eq!(
            both.message,
            format!("high_noise: loss 0.1 · low_noise: {waiting}")
        );
        let previews = combined_status(
            &schedule,
            6,
            0,
            &[
                (
                    Expert::High,
                    rank(JobPhase::Sampling, "Generating sample 1/1"),
                ),
                (Expert::Low, rank(JobPhase::Sampling, waiting)),
            ],
        );
        assert_eq!(previews.state, JobPhase::Sampling);
    }

    #[test]
    fn four_devices_make_two_groups_with_their_own_stores() {
        let devices: Vec<String> = (0..4).map(|g| format!("cuda:{g}")).collect();
        let ranks = plan_ranks(&Expert::BOTH, &devices, 7, DistBackend::Auto).unwrap();
        let experts: Vec<Expert> = ranks.iter().map(|r| r.expert).collect();
        assert_eq!(
            experts,
            [Expert::High, Expert::High, Expert::Low, Expert::Low]
        );
        let places: Vec<&DataPlace> = ranks.iter().map(|r| r.data.as_ref().unwrap()).collect();
        assert_eq!(
            places.iter().map(|p| (p.rank, p.world)).collect::<Vec<_>>(),
            [(0, 2), (1, 2), (0, 2), (1, 2)]
        );
        assert_eq!(places[0].master_port, places[1].master_port);
        assert_ne!(places[0].master_port, places[2].master_port);
        // Two devices: one rank per expert, no group; an odd count is refused.
        let two = plan_ranks(&Expert::BOTH, &devices[..2], 7, DistBackend::Auto).unwrap();
        assert!(two.iter().all(|r| r.data.is_none()));
        assert!(plan_ranks(&Expert::BOTH, &devices[..3], 7, DistBackend::Auto).is_err());
        // A group on one GPU twice goes over gloo.
        let shared = ["cuda:0", "cuda:0", "cuda:1", "cuda:1"].map(String::from);
        let ranks = plan_ranks(&Expert::BOTH, &shared, 7, DistBackend::Auto).unwrap();
        assert!(ranks
            .iter()
            .all(|r| r.data.as_ref().unwrap().backend == DistBackend::Gloo));
    }

    #[test]
    fn ranks_run_on_the_listed_gpus_or_the_cpu() {
        assert_eq!(rank_devices("cuda", &[0, 1]), ["cuda:0", "cuda:1"]);
        assert_eq!(rank_devices("cuda:0", &[3, 3]), ["cuda:3", "cuda:3"]);
        assert_eq!(rank_devices("cpu", &[0, 1]), ["cpu", "cpu"]);
    }
}
