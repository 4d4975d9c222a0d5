//! Previews of an expert-parallel job: each expert lives in its own process, so a preview's two
//! phases run in two processes. The high-noise rank runs the high-noise phase of each preview at
//! the job's preview steps and leaves the run's state — latents and the sampler's state, exact
//! (`SampleRun::hand_off`) — in `ranks/previews/<step:09>_<index>.safetensors`, then trains on.
//! The low-noise rank, at the same step, waits for each hand-off, rebuilds the same run (the
//! request and texts from its text cache, the start frame's condition from the hand-off), takes
//! the state over, runs the low-noise phase with its LoRA, decodes and writes `samples/` as the
//! one-process run does, and deletes the hand-off. Each expert's LoRA at a step equals the
//! alternating run's, so the previews equal it too.
//!
//! A `sample_now` request reaches both ranks, which are at different steps: the high-noise rank
//! acts on it, and the low-noise rank renders any hand-off of a step it has reached (at once when
//! it is ahead, at that step when it is behind).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::sampling::SamplingState;
use wanlora_spec::job_folder::{
    parse_preview_hand_off_name, preview_hand_off_name, PREVIEW_HAND_OFFS, STATUS,
};

/// How often the low-noise rank looks for a hand-off it waits for.
const POLL: Duration = Duration::from_millis(20);

/// The low-noise rank stops waiting for a hand-off when the high-noise rank's status has not
/// changed for this long (it writes one at every step it trains and every preview it starts).
const SILENCE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The header values of a hand-off file that name its preview (besides the sampling state's).
const STEP_KEY: &str = "job_step";
const INDEX_KEY: &str = "sample_index";
const SEED_KEY: &str = "sample_seed";

impl Trainer {
    /// Every preview at `step` in an expert-parallel rank: the high-noise rank runs their
    /// high-noise phases and hands them off; the low-noise rank waits for those hand-offs and
    /// finishes them. A preview that fails or never comes is reported and skipped.
    pub(super) fn sample_all_in_rank(&mut self, step: u64, rank: Expert) -> Result<(), TrainError> {
        let n = self.samples.len();
        for i in 0..n {
            let (what, outcome) = match rank {
                Expert::High => {
                    let msg = format!("Generating sample {}/{n} (high-noise phase)", i + 1);
                    self.folder
                        .write_status(&self.status(JobPhase::Sampling, &msg, None, None))?;
                    let handed = crate::error::catch_libtorch(|| self.hand_off_preview(step, i));
                    ("handed over", handed.map_err(|e| e.to_string()))
                }
                Expert::Low => {
                    let msg = format!(
                        "Waiting for sample {}/{n}'s high-noise phase from the other rank",
                        i + 1
                    );
                    self.folder
                        .write_status(&self.status(JobPhase::Sampling, &msg, None, None))?;
                    ("received", self.wait_for_hand_off(step, i))
                }
            };
            match outcome {
                Ok(path) => self.folder.log(&format!(
                    "sample {i} at step {step}: high-noise phase {what} ({})",
                    path.display()
                )),
                Err(why) => {
                    let msg = format!("sample {i} at step {step} was skipped: {why}");
                    eprintln!("warning: {msg}");
                    self.folder.log(&msg);
                }
            }
        }
        if rank == Expert::Low {
            self.finish_hand_offs(step)?;
        }
        Ok(())
    }

    /// Takes a `sample_now` request; whether to act on it. The low-noise rank of an
    /// expert-parallel job takes it without acting: it finishes what the high-noise rank hands
    /// over on that request ([`Trainer::finish_hand_offs`]).
    pub(super) fn preview_requested(&self) -> bool {
        self.folder.take_control(Control::SampleNow) && self.part.rank() != Some(Expert::Low)
    }

    /// In the low-noise rank: finishes every hand-off of a step up to `step` (previews the
    /// high-noise rank made on a `sample_now` request), oldest first. Elsewhere nothing — also in
    /// the other ranks of the low-noise expert's data-parallel group, which make no previews: the
    /// hand-offs are their rank 0's.
    pub(super) fn finish_hand_offs(&mut self, step: u64) -> Result<(), TrainError> {
        if self.part.rank() != Some(Expert::Low) || self.folder.quiet || self.samples.is_empty() {
            return Ok(());
        }
        let dir = self.folder.path(PREVIEW_HAND_OFFS);
        let mut pending: Vec<(u64, usize)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| parse_preview_hand_off_name(&e.file_name().to_string_lossy()))
            .filter(|&(at, _)| at <= step)
            .collect();
        pending.sort();
        let n = self.samples.len();
        for (at, i) in pending {
            let path = dir.join(preview_hand_off_name(at, i));
            let msg = format!("Generating sample {}/{n} (low-noise phase)", i + 1);
            self.folder
                .write_status(&self.status(JobPhase::Sampling, &msg, None, None))?;
            let outcome = crate::error::catch_libtorch(|| self.finish_hand_off(at, i, &path));
            self.report_sample(at, i, outcome);
            // Finished or failed, it is not tried again.
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    /// The high-noise phase of preview `index` with this rank's expert and LoRA, its state
    /// written (atomically) for the low-noise rank. Returns the hand-off's path.
    fn hand_off_preview(&mut self, step: u64, index: usize) -> Result<PathBuf, TrainError> {
        let (request, mut run) = self.start_sample(index)?;
        self.trained_phase(&mut run, Expert::High)?;
        let SamplingState {
            mut values,
            tensors,
        } = run.hand_off()?;
        values.insert(STEP_KEY.into(), step.to_string());
        values.insert(INDEX_KEY.into(), index.to_string());
        values.insert(SEED_KEY.into(), request.seed.to_string());
        let dir = self.folder.path(PREVIEW_HAND_OFFS);
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let path = dir.join(preview_hand_off_name(step, index));
        let tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
        wanlora_torch::weights::save_safetensors(&path, &tensors, &values)?;
        Ok(path)
    }

    /// Waits until the high-noise rank has handed over preview `index` of `step`; why not when it
    /// never will: the run is stopping, the high-noise rank has ended or gone past `step` without
    /// it (its phase failed), or it has been silent for [`SILENCE_LIMIT`].
    fn wait_for_hand_off(&self, step: u64, index: usize) -> Result<PathBuf, String> {
        let path = self
            .folder
            .path(PREVIEW_HAND_OFFS)
            .join(preview_hand_off_name(step, index));
        let high_status = JobFolder::rank_dir(&self.folder.root, Expert::High).join(STATUS);
        let stop_file = self.folder.control_dir().join(Control::Stop.file_name());
        let mut last_status: Option<String> = None;
        let mut heard = Instant::now();
        loop {
            if path.exists() {
                return Ok(path);
            }
            // Left for `after_step` to take: the wait only gives way to it.
            if output::interrupted() || stop_file.exists() {
                return Err("the run is stopping".into());
            }
            let text = std::fs::read_to_string(&high_status).ok();
            let status = text
                .as_deref()
                .and_then(|t| serde_json::from_str::<Status>(t).ok());
            let gone = match status {
                Some(s) if s.state.is_final() => Some("the high-noise rank has ended".to_string()),
                Some(s) if s.step > step => Some(format!(
                    "the high-noise rank went on to step {} without handing it over (see log.txt)",
                    s.step
                )),
                _ => None,
            };
            if let Some(why) = gone {
                // It may have written the hand-off just before its status.
                return if path.exists() { Ok(path) } else { Err(why) };
            }
            if text != last_status {
                last_status = text;
                heard = Instant::now();
            } else if heard.elapsed() > SILENCE_LIMIT {
                return Err(format!(
                    "no word from the high-noise rank for {} minutes",
                    SILENCE_LIMIT.as_secs() / 60
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The low-noise phase and the files of preview `index` of `step`, from its hand-off.
    fn finish_hand_off(
        &mut self,
        step: u64,
        index: usize,
        path: &Path,
    ) -> Result<SampleFiles, TrainError> {
        let bad = |why: String| TrainError::Setup(format!("{}: {why}", path.display()));
        if index >= self.samples.len() {
            return Err(bad(format!(
                "preview {index}, but the job has {} previews",
                self.samples.len()
            )));
        }
        let file = wanlora_torch::weights::SafeTensorsFile::open(path)?;
        let values: BTreeMap<String, String> = file
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let expected = [
            (STEP_KEY, step.to_string()),
            (INDEX_KEY, index.to_string()),
            (SEED_KEY, self.samples[index].seed.to_string()),
        ];
        for (key, value) in expected {
            if values.get(key) != Some(&value) {
                return Err(bad(format!(
                    "{key} is {:?}, expected {value} (a hand-off of another run)",
                    values.get(key)
                )));
            }
        }
        let mut tensors = BTreeMap::new();
        for name in file.names() {
            tensors.insert(name.to_string(), file.tensor_raw(name, Device::Cpu)?);
        }
        let state = SamplingState { values, tensors };
        // The start frame's condition comes with the hand-off: no second VAE encode.
        let request = self.samples[index].clone();
        let condition = Conditioning::handed_off(&state, self.device)?;
        let mut run = self.sample_run(&request, &condition)?;
        run.resume_from(&state)?;
        self.trained_phase(&mut run, Expert::Low)?;
        self.write_finished_sample(step, index, &request, &run)
    }
}
