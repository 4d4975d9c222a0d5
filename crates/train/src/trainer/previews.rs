//! Evaluations during training: every preview sample of the job at a step (the untrained expert
//! loaded only when they need it), and the validation loss on the held-out clips.

use super::*;

impl Trainer {
    /// Makes every preview of the job at `step` (files `samples/<step:09>_<i>.*`). A failed preview is
    /// reported and skipped: previews never stop a run.
    pub(super) fn sample_all(&mut self, step: u64) -> Result<(), TrainError> {
        if let Some(rank) = self.part.rank() {
            // Each rank of an expert-parallel job runs its expert's phase (preview_hand_off.rs).
            return self.sample_all_in_rank(step, rank);
        }
        let n = self.samples.len();
        for i in 0..n {
            let msg = format!("Generating sample {}/{n}", i + 1);
            self.folder
                .write_status(&self.status(JobPhase::Sampling, &msg, None, None))?;
            let outcome = crate::error::catch_libtorch(|| self.sample_one(step, i));
            self.report_sample(step, i, outcome);
        }
        // The trained expert of the next step goes back to the GPU in `train_step`.
        if self.job.job.process().model.low_vram {
            if let Some((_, m)) = &mut self.untrained {
                if !m.is_parked() {
                    m.offload()?;
                }
            }
        }
        // Previews may have loaded the other expert or parked the trained ones.
        self.memory.models_moved();
        Ok(())
    }

    /// Logs a finished preview's file, or why it failed (a warning: previews never stop a run).
    pub(super) fn report_sample(
        &self,
        step: u64,
        index: usize,
        outcome: Result<SampleFiles, TrainError>,
    ) {
        match outcome {
            Ok(files) => self.folder.log(&format!(
                "sample {index} at step {step}: {}",
                files.media[0].display()
            )),
            Err(e) => {
                let msg = format!("sample {index} at step {step} failed and was skipped: {e}");
                eprintln!("warning: {msg}");
                self.folder.log(&msg);
            }
        }
    }

    /// Runs `expert`'s phase of `run` with the trained expert and its LoRA.
    pub(super) fn trained_phase(
        &mut self,
        run: &mut SampleRun,
        expert: Expert,
    ) -> Result<(), TrainError> {
        self.activate(expert)?;
        let er = self.trained(expert).ok_or_else(|| {
            TrainError::Setup(format!(
                "this process does not train the {} expert",
                expert.name()
            ))
        })?;
        tch::no_grad(|| run.denoise_phase(expert, &er.model, Some(&er.lora), &mut |_| {}))?;
        Ok(())
    }

    /// One preview: the start frame's condition, both experts' phases (the untrained expert is loaded
    /// the first time it is needed), decoding, and the files.
    pub(super) fn sample_one(
        &mut self,
        step: u64,
        index: usize,
    ) -> Result<SampleFiles, TrainError> {
        let (request, mut run) = self.start_sample(index)?;
        for expert in [Expert::High, Expert::Low] {
            if run.remaining(expert) == 0 {
                continue;
            }
            if self.trained(expert).is_some() {
                self.trained_phase(&mut run, expert)?;
            } else {
                self.prepare_untrained(expert)?;
                let (_, model) = self.untrained.as_ref().expect("loaded above");
                tch::no_grad(|| run.denoise_phase(expert, model, None, &mut |_| {}))?;
            }
        }
        self.write_finished_sample(step, index, &request, &run)
    }

    /// Preview `index`'s request and its run at step 0: the start frame's condition, the texts,
    /// the seeded noise.
    pub(super) fn start_sample(
        &self,
        index: usize,
    ) -> Result<(SampleRequest, SampleRun), TrainError> {
        let request = self.samples[index].clone();
        let condition = tch::no_grad(|| start_condition(&request, &self.vae))?;
        let run = self.sample_run(&request, &condition)?;
        Ok((request, run))
    }

    /// A run of `request` with `condition`, the prompt and the negative prompt from the text
    /// cache.
    pub(super) fn sample_run(
        &self,
        request: &SampleRequest,
        condition: &Conditioning,
    ) -> Result<SampleRun, TrainError> {
        let cond = self
            .context(&request.prompt)?
            .to_kind(self.kind)
            .unsqueeze(0);
        let uncond = self
            .context(&request.negative_prompt)?
            .to_kind(self.kind)
            .unsqueeze(0);
        Ok(SampleRun::new(
            request,
            &cond,
            &uncond,
            condition,
            self.device,
        )?)
    }

    /// Decodes a finished preview and writes its files `samples/<step:09>_<index>.*`.
    pub(super) fn write_finished_sample(
        &self,
        step: u64,
        index: usize,
        request: &SampleRequest,
        run: &SampleRun,
    ) -> Result<SampleFiles, TrainError> {
        let video = tch::no_grad(|| self.vae.decode(run.latents()))?;
        let frames = video_frames(&video)?;
        write_sample(
            &frames,
            request.fps,
            &[request.format],
            &self.folder.path(job_folder::SAMPLES),
            &sample_stem(step, index),
        )
        .map_err(TrainError::from)
    }

    /// Loads the expert that is not trained (fetching its files if needed) or brings it back from host
    /// memory; with `low_vram` the trained experts are parked first.
    pub(super) fn prepare_untrained(&mut self, expert: Expert) -> Result<(), TrainError> {
        let low_vram = self.job.job.process().model.low_vram;
        if low_vram {
            for e in self.experts.iter_mut().filter(|e| !e.model.is_parked()) {
                e.model.offload()?;
            }
        }
        match &mut self.untrained {
            Some((_, m)) if m.is_parked() => {
                m.load_to(self.device)?;
            }
            Some(_) => {}
            None => {
                self.sources.prepare_samples()?;
                let t0 = Instant::now();
                let model = self
                    .sources
                    .transformer(expert, self.kind, self.device, &self.load)?;
                self.folder.log(&format!(
                    "{} expert (not trained) loaded for previews in {:.1} s",
                    expert.name(),
                    t0.elapsed().as_secs_f64()
                ));
                self.untrained = Some((expert, model));
            }
        }
        Ok(())
    }

    /// When a pass is due, the held-out loss of every trained expert, one metrics record each.
    pub(super) fn validate_if_due(&mut self) -> Result<(), TrainError> {
        let step = self.step;
        let Some(set) = self.validation.take_if(|v| v.due(step)) else {
            return Ok(());
        };
        let result = crate::error::catch_libtorch(|| self.validate_experts(&set));
        self.validation = Some(set);
        result
    }

    pub(super) fn validate_experts(&mut self, set: &ValidationSet) -> Result<(), TrainError> {
        for i in 0..self.experts.len() {
            let expert = self.experts[i].expert;
            self.activate(expert)?;
            let e = &self.experts[i];
            let record = set.evaluate(
                self.step,
                expert,
                &e.model,
                &e.lora,
                self.boundary,
                self.kind,
            )?;
            self.folder.append_metrics(&record)?;
        }
        Ok(())
    }
}
