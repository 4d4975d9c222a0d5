//! The run loop: steps, metrics, status, saves and previews when due, stop requests, the end.

use super::*;

impl Trainer {
    /// Runs until `train.steps`, a stop request, or an error. Saves on the way and at the end. Any
    /// error marks the job failed, with the reason, in status.json and log.txt.
    pub fn run(mut self) -> Result<RunSummary, TrainError> {
        crate::error::catch_libtorch(|| self.run_steps()).map_err(|e| self.fail(e))
    }

    pub(super) fn run_steps(&mut self) -> Result<RunSummary, TrainError> {
        let p = self.job.job.process().clone();
        let total = p.train.steps as u64;
        let bar = self.opts.progress.then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_position(self.step);
            b
        });
        let mut losses = Vec::new();
        let mut smoothed: Option<f64> = None;
        let mut sps: Option<f64> = None;
        let mut non_finite = NonFiniteCounter::default();
        let mut stopped = false;
        let mut files = Vec::new();
        let mut done_this_run = 0u64;
        let mut perf = PerfLog::new(p.performance_log_every);
        let resumed = self.step > 0;
        if !self.samples.is_empty()
            && ((!resumed && !p.train.skip_first_sample) || (resumed && p.train.force_first_sample))
        {
            self.sample_all(self.step)?;
        }
        if !resumed {
            self.validate_if_due().map_err(|e| self.fail(e))?;
        }
        while self.step < total {
            let expert = self.schedule.expert_at(self.step);
            if !self.part.trains(expert) {
                // Another process of this expert-parallel job trains this step; saves and
                // validation still come at the job's steps.
                self.step += 1;
                if self.after_step(&p, &mut perf, expert, sps, &mut files)? {
                    stopped = true;
                    break;
                }
                continue;
            }
            let t0 = Instant::now();
            let outcome = self.advance()?;
            done_this_run += 1;
            let (expert, secs) = (outcome.expert, t0.elapsed().as_secs_f64());
            sps = Some(sps.map_or(secs, |s| 0.9 * s + 0.1 * secs));
            perf.step(secs);
            match outcome.loss {
                Some(l) => {
                    smoothed = Some(smoothed.map_or(l, |s| 0.95 * s + 0.05 * l));
                    losses.push((self.step, expert, l));
                    self.folder.append_metrics(&Metrics {
                        step: self.step,
                        expert: expert.name().into(),
                        loss: l,
                        loss_main: outcome.loss_main,
                        loss_preservation: outcome.loss_preservation,
                        lr: outcome.lr,
                        grad_norm: outcome.grad_norm,
                        timestep: outcome.timestep,
                        seconds: secs,
                        time: output::now_rfc3339(),
                    })?;
                }
                None => {
                    let msg = format!(
                        "step {}: non-finite loss or gradient, step skipped",
                        self.step
                    );
                    eprintln!("warning: {msg}");
                    self.folder.log(&msg);
                }
            }
            if let Some(count) = non_finite.record(expert, outcome.loss.is_some()) {
                return Err(TrainError::Diverged {
                    count,
                    expert: expert.name(),
                    step: self.step,
                });
            }
            let message = format!(
                "loss {:.4} | {:.2} s/step | {}",
                smoothed.unwrap_or(f64::NAN),
                sps.unwrap_or(0.0),
                expert.name()
            );
            if let Some(b) = &bar {
                b.set_position(self.step);
                b.set_message(message.clone());
            } else if p.logging.log_every > 0
                && self.step.is_multiple_of(p.logging.log_every as u64)
            {
                eprintln!("step {}/{total} {message}", self.step);
            }
            self.folder.write_status(&self.status(
                JobPhase::Training,
                &message,
                Some(expert),
                sps,
            ))?;
            let stop_requested = self.after_step(&p, &mut perf, expert, sps, &mut files)?;

            if stop_requested {
                stopped = true;
                break;
            }
            if self.opts.stop_after.is_some_and(|n| done_this_run >= n) {
                stopped = true;
                break;
            }
        }
        if !stopped {
            files = self.save(true)?;
            if !self.samples.is_empty() {
                self.sample_all(self.step)?;
            }
        }
        if let Some(b) = &bar {
            b.finish();
        }
        if self.part == JobPart::Whole {
            // An expert-parallel job's supervisor plots both ranks' losses at its end.
            self.write_loss_plot();
        }
        let state = if stopped {
            JobPhase::Stopped
        } else {
            JobPhase::Completed
        };
        let msg = if stopped {
            "Stopped; resume by running the job again"
        } else {
            "Done"
        };
        self.folder
            .write_status(&self.status(state, msg, None, sps))?;
        self.folder.remove_pid();
        Ok(RunSummary {
            output: self.folder.root.clone(),
            step: self.step,
            losses,
            stopped,
            files,
        })
    }

    /// What follows a step (trained here or, in an expert-parallel rank, by the other process):
    /// validation, a save and previews when due or asked for, the performance line. Returns whether
    /// a stop was asked for.
    fn after_step(
        &mut self,
        p: &wanlora_config::Process,
        perf: &mut PerfLog,
        expert: Expert,
        sps: Option<f64>,
        files: &mut Vec<PathBuf>,
    ) -> Result<bool, TrainError> {
        let total = p.train.steps as u64;
        self.validate_if_due().map_err(|e| self.fail(e))?;

        let stop_requested = output::interrupted() || self.folder.take_control(Control::Stop);
        // Data-parallel ranks stop together, at the same step.
        let stop_requested = match &self.data {
            Some(d) => d.any(stop_requested)?,
            None => stop_requested,
        };
        let save_due = p.save.save_every > 0 && self.step.is_multiple_of(p.save.save_every as u64);
        if (save_due || self.folder.take_control(Control::SaveNow) || stop_requested)
            && self.step < total
        {
            self.folder.write_status(&self.status(
                JobPhase::Saving,
                "Saving",
                Some(expert),
                sps,
            ))?;
            let t = Instant::now();
            *files = self.save(false)?;
            perf.phase(Phase::Saving, t.elapsed());
        }
        let sample_due = p.sample.sample_every > 0
            && self.step >= p.sample.sample_start_step as u64
            && self.step.is_multiple_of(p.sample.sample_every as u64)
            && self.step < total;
        if !self.samples.is_empty() && (sample_due || self.preview_requested()) && !stop_requested {
            let t = Instant::now();
            self.sample_all(self.step)?;
            perf.phase(Phase::Sampling, t.elapsed());
        }
        if !stop_requested && self.step < total {
            // An expert-parallel job's low-noise rank: previews the other rank made on request
            // (those of the last step wait for the final previews).
            self.finish_hand_offs(self.step)?;
        }
        if let Some(line) = perf.report(self.step) {
            eprintln!("{line}");
            self.folder.log(&line);
        }
        Ok(stop_requested)
    }
}
