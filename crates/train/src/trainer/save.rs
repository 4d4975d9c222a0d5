//! Saving and resuming: LoRA files with their metadata, the resumable state, rotation, the loss plot.

use super::*;

pub(super) fn save_kind(d: SaveDtype) -> Kind {
    match d {
        SaveDtype::Float16 => Kind::Half,
        SaveDtype::Bf16 => Kind::BFloat16,
        SaveDtype::Float32 => Kind::Float,
    }
}

impl Trainer {
    pub(super) fn resume(
        &mut self,
        run: &RunState,
        dir: &std::path::Path,
    ) -> Result<(), TrainError> {
        let p = self.job.job.process();
        let experts: Vec<Expert> = self.experts.iter().map(|e| e.expert).collect();
        if run.format == 1 {
            return Err(TrainError::Setup(format!(
                "{}: this state was saved by an earlier wanlora whose experts shared one data order and \
                 noise stream; this version gives each expert its own, so the run cannot continue exactly. \
                 Finish it with the earlier version, or delete the state/ folder to start over",
                dir.display()
            )));
        }
        // An expert-parallel rank continues its expert from its own state or from one of the
        // whole job's.
        let same_experts = match self.part {
            JobPart::Expert { .. } => experts.iter().all(|e| run.experts.contains(e)),
            _ => run.experts == experts,
        };
        if run.format != STATE_FORMAT || !same_experts || run.rank != p.network.linear as i64 {
            return Err(TrainError::Setup(format!(
                "{}: the saved state is for experts {:?} at rank {}, this job trains {:?} at rank {}; use a new \
                 `config.name` or delete the state/ folder to start over",
                dir.display(),
                run.experts,
                run.rank,
                experts,
                p.network.linear
            )));
        }
        for e in &mut self.experts {
            checkpoint::load_expert_state(
                dir,
                e.expert,
                &e.flat.flat,
                &mut e.optimizer,
                e.ema.as_mut().map(|m| &mut m.shadow),
            )?;
        }
        for e in &mut self.experts {
            let saved = run
                .samplers
                .iter()
                .find(|s| s.expert == e.expert)
                .ok_or_else(|| {
                    TrainError::Setup(format!(
                        "{}: run.json has no data order for the {} expert; delete the state/ folder to start over",
                        dir.display(),
                        e.expert.name()
                    ))
                })?;
            e.sampler.restore(&saved.sampler)?;
            if let (Some(s), Some(state)) = (&mut e.reg_sampler, &saved.reg_sampler) {
                s.restore(state)?;
            }
        }
        self.step = run.step;
        let msg = format!("resuming at step {} from {}", run.step, dir.display());
        eprintln!("{msg}");
        self.folder.log(&msg);
        Ok(())
    }

    /// A copy of one trained expert's LoRA values (the flat fp32 buffer).
    pub fn lora_values(&self, expert: Expert) -> Option<Tensor> {
        self.trained(expert).map(|e| e.flat.flat.detach().copy())
    }

    /// Saves now (step files, rotation, state), as `save_every` does.
    pub fn save_checkpoint(&mut self) -> Result<Vec<PathBuf>, TrainError> {
        self.save(false)
    }

    /// Writes the LoRA files of every trained expert (and EMA variants), rotates step saves, and
    /// saves the training state.
    pub(super) fn save(&mut self, final_save: bool) -> Result<Vec<PathBuf>, TrainError> {
        if self.folder.quiet {
            // Rank 0 of a data-parallel run saves the LoRA every rank holds.
            return Ok(Vec::new());
        }
        let p = self.job.job.process().clone();
        let name = &self.job.job.config.name;
        let kind = save_kind(p.save.dtype);
        self.check_before_save(kind)?;
        let mut files = Vec::new();
        for e in &self.experts {
            let meta = self.metadata(e.expert);
            let step = (!final_save).then_some(self.step);
            let path = self
                .folder
                .path(&checkpoint::lora_file_name(name, step, e.expert, false));
            e.lora.save(&path, kind, &meta)?;
            files.push(path);
            if let Some(ema) = &e.ema {
                let params: Vec<Tensor> = (0..e.flat.params.len())
                    .map(|i| {
                        let (off, n) = e.flat.span(i);
                        ema.shadow
                            .narrow(0, off, n)
                            .view(e.flat.params[i].size().as_slice())
                    })
                    .collect();
                let ema_set = e.lora.with_parameters(&params);
                let path = self
                    .folder
                    .path(&checkpoint::lora_file_name(name, step, e.expert, true));
                ema_set.save(&path, kind, &meta)?;
                files.push(path);
            }
        }
        if !final_save {
            checkpoint::rotate_saves_of(
                &self.folder.root,
                name,
                p.save.max_step_saves_to_keep,
                self.folder.rank,
            )?;
        }
        let run = RunState {
            format: STATE_FORMAT,
            step: self.step,
            seed: self.seed,
            rank: p.network.linear as i64,
            alpha: p.network.alpha(),
            experts: self.experts.iter().map(|e| e.expert).collect(),
            samplers: self
                .experts
                .iter()
                .map(|e| ExpertSamplers {
                    expert: e.expert,
                    sampler: e.sampler.state(),
                    reg_sampler: e.reg_sampler.as_ref().map(BatchSampler::state),
                })
                .collect(),
        };
        let states = self.expert_states();
        checkpoint::save_state_in(&self.folder.states(), &run, &states)?;
        self.folder
            .log(&format!("saved step {}: {}", self.step, files.len()));
        Ok(files)
    }

    /// What a save writes of each trained expert.
    pub(super) fn expert_states(&self) -> Vec<ExpertState<'_>> {
        self.experts
            .iter()
            .map(|e| ExpertState {
                expert: e.expert,
                lora_flat: &e.flat.flat,
                optimizer: &e.optimizer,
                ema: e.ema.as_ref().map(|m| &m.shadow),
            })
            .collect()
    }

    /// Refuses a save that would write NaN or infinite values (a clean earlier checkpoint must not
    /// be rotated away for it) or that the disk has no room for.
    pub(super) fn check_before_save(&self, kind: Kind) -> Result<(), TrainError> {
        let states = self.expert_states();
        let bad = divergence::non_finite_parts(&states);
        if !bad.is_empty() {
            return Err(TrainError::NonFiniteValues {
                step: self.step,
                parts: bad.join(", "),
            });
        }
        jobfiles::check_free_space(
            &self.folder.root,
            self.step,
            checkpoint::save_bytes(&states, kind),
        )
    }

    /// safetensors metadata of a LoRA file: what it is and how it was trained (all strings).
    pub(super) fn metadata(&self, expert: Expert) -> BTreeMap<String, String> {
        let job = &self.job.job;
        let p = job.process();
        let mut m = BTreeMap::new();
        for (k, v) in &job.meta {
            m.insert(
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
        let arch = p.model.arch.facts();
        m.insert(
            "ss_base_model_version".into(),
            arch.base_model_version.into(),
        );
        m.insert("wanlora_arch".into(), arch.name.into());
        m.insert("wanlora_expert".into(), expert.name().into());
        m.insert("ss_output_name".into(), job.config.name.clone());
        m.insert(
            "training_info".into(),
            serde_json::json!({"step": self.step}).to_string(),
        );
        m.insert("ss_network_dim".into(), p.network.linear.to_string());
        m.insert("ss_network_alpha".into(), p.network.alpha().to_string());
        m.insert("format".into(), "pt".into());
        if let Some(t) = &p.trigger_word {
            m.insert(
                "ss_tag_frequency".into(),
                serde_json::json!({ format!("1_{t}"): { t.clone(): 1 } }).to_string(),
            );
            m.insert("wanlora_trigger_word".into(), t.clone());
        }
        m.insert(
            "wanlora_datasets".into(),
            serde_json::json!(self
                .catalog
                .datasets
                .iter()
                .enumerate()
                .map(|(i, d)| serde_json::json!({
                    "folder": d.folder,
                    "resolution": d.resolution,
                    "is_reg": d.is_reg,
                    "items": self.catalog.usable_items().filter(|it| it.dataset == i).count()
                }))
                .collect::<Vec<_>>())
            .to_string(),
        );
        m.insert(
            "software".into(),
            serde_json::json!({"name": "wanlora", "version": env!("CARGO_PKG_VERSION")})
                .to_string(),
        );
        m
    }

    pub(super) fn write_loss_plot(&self) {
        write_loss_plot(&self.folder);
    }
}

/// loss.png from metrics.jsonl: one series per expert.
pub(crate) fn write_loss_plot(folder: &JobFolder) {
    let Ok(text) = std::fs::read_to_string(folder.path(job_folder::METRICS)) else {
        return;
    };
    let mut by_step: BTreeMap<u64, (String, f64)> = BTreeMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let (Some(s), Some(e), Some(l)) =
                (v["step"].as_u64(), v["expert"].as_str(), v["loss"].as_f64())
            {
                by_step.insert(s, (e.to_string(), l));
            }
        }
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = ["high_noise", "low_noise"]
        .iter()
        .map(|e| {
            (
                e.to_string(),
                by_step
                    .iter()
                    .filter(|(_, (x, _))| x == e)
                    .map(|(s, (_, l))| (*s as f64, *l))
                    .collect(),
            )
        })
        .filter(|(_, v): &(String, Vec<(f64, f64)>)| !v.is_empty())
        .collect();
    series.extend(crate::validation::plot_series(&text));
    let refs: Vec<(&str, &[(f64, f64)])> = series
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    if let Err(e) = wanlora_data::write_loss_plot_png(&refs, &folder.path(job_folder::LOSS_PLOT)) {
        folder.log(&format!("loss plot: {e}"));
    }
}
