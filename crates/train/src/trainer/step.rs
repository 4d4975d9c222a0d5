//! One optimizer step: the micro-batches (noise, timesteps, conditions), forward and backward,
//! preservation passes, the optimizer and EMA updates; which expert is active.

use super::*;

/// Everything one micro-batch needs, on the device.
pub(super) struct MicroBatch {
    pub(super) input: Tensor,
    pub(super) target: Tensor,
    pub(super) timestep: Tensor,
    pub(super) context: Tensor,
    pub(super) preservation_context: Option<Tensor>,
    pub(super) weights: Tensor,
    /// TI2V-5B image-to-video: 0 on the clean start frame's latent, left out of the loss.
    pub(super) loss_mask: Option<Tensor>,
    pub(super) multiplier: Multiplier,
    pub(super) mean_timestep: f64,
}

impl Trainer {
    /// The text embedding of `caption`, padded to the model's text length.
    pub(super) fn context(&self, caption: &str) -> Result<Tensor, TrainError> {
        let real = self
            .texts
            .get(caption)
            .ok_or_else(|| TrainError::Setup(format!("caption {caption:?} was not encoded")))?;
        Ok(encoders::pad_context(real, self.text_len))
    }

    /// Latents, condition, text and weights of one batch, with noise and timesteps drawn from
    /// seeds of (job seed, expert, `expert_step`) alone: resuming reproduces them exactly, and an
    /// expert sees the same ones whether the experts alternate or train in parallel.
    pub(super) fn micro_batch(
        &mut self,
        expert_step: u64,
        micro: u64,
        expert: Expert,
    ) -> Result<MicroBatch, TrainError> {
        let er = self
            .trained_mut(expert)
            .expect("only trained experts draw batches");
        let use_reg = er.reg_sampler.is_some() && expert_step % 2 == 1;
        let (batch, epoch) = match (&mut er.reg_sampler, use_reg) {
            (Some(s), true) => (s.next_batch(), s.epoch()),
            _ => (er.sampler.next_batch(), er.sampler.epoch()),
        };
        let stream = [self.seed, expert_stream(expert), expert_step, micro];
        let train = self.job.job.process().train.clone();
        let arch = self.job.job.process().model.arch.facts();
        let trigger = self
            .job
            .job
            .process()
            .trigger_word
            .clone()
            .unwrap_or_default();
        let mut x0s = Vec::new();
        let mut ys = Vec::new();
        let mut ctxs = Vec::new();
        let mut pres = Vec::new();
        let mut weights = Vec::new();
        let mut mults = Vec::new();
        let mut ts = Vec::new();
        let mut rng = SplitMix64::for_parts(&[&stream[..], &[0x7157]].concat());
        // Data-parallel: every rank draws the whole batch's timesteps and noise and keeps its
        // own entries', so the ranks together train exactly the one-process batch.
        let mut own = Vec::new();
        for (index, entry) in batch.entries.iter().enumerate() {
            let t = timesteps::draw(
                train.timestep_type,
                train.content_or_style,
                expert.window(self.boundary),
                &mut rng,
            );
            if self.data.as_ref().is_some_and(|d| !d.owns(index)) {
                continue;
            }
            own.push(index as i64);
            let item: DataItem = self.catalog.items[entry.item].clone();
            let first_frame_condition = arch.first_frame_condition;
            let mut enc = VaeLatentEncoder {
                vae: &self.vae,
                fingerprint: self.vae_fingerprint.clone(),
                first_frame_condition,
            };
            let tensors = item_latents(&self.catalog, &item, Some(&mut self.cache), &mut enc)?;
            let get = |n: &str| {
                tensors.get(n).ok_or_else(|| {
                    TrainError::Setup(format!(
                        "latent cache entry of {} has no {n}",
                        item.path.display()
                    ))
                })
            };
            x0s.push(encoders::from_named(
                get(encoders::LATENT)?,
                Kind::Float,
                self.device,
            )?);
            if first_frame_condition {
                ys.push(encoders::from_named(
                    get(encoders::CONDITION)?,
                    Kind::Float,
                    self.device,
                )?);
            }
            let caption = if train.unload_text_encoder {
                trigger.clone()
            } else {
                self.catalog
                    .caption_for(&item, epoch, entry.repeat)
                    .to_string()
            };
            ctxs.push(self.context(&caption)?);
            if train.diff_output_preservation {
                let c = item
                    .preservation_caption
                    .clone()
                    .unwrap_or_else(|| caption.clone());
                pres.push(self.context(&c)?);
            } else if train.blank_prompt_preservation {
                pres.push(self.context("")?);
            }
            ts.push(t);
            weights.push(item.loss_multiplier * timesteps::loss_weight(train.timestep_type, t));
            mults.push(item.network_weight);
        }
        let x0 = Tensor::stack(&x0s, 0);
        // The noise has a stream of its own (drawn on the CPU, as PyTorch would from a CPU
        // generator): previews or anything else that draws random numbers cannot shift it, so a
        // resumed run sees the noise the uninterrupted run saw.
        let noise_seed = derive_seed(&[&stream[..], &[0x4015]].concat());
        let mut whole_batch = x0.size();
        whole_batch[0] = batch.entries.len() as i64;
        let noise = wanlora_torch::rng::torch_randn(
            noise_seed ^ (noise_seed >> 32),
            &whole_batch,
            self.device,
        )?
        .index_select(0, &Tensor::from_slice(&own).to_device(self.device));
        let sigma = Tensor::from_slice(&ts)
            .to_kind(Kind::Float)
            .to_device(self.device)
            / 1000.0;
        let xt = loss::noisy(&x0, &noise, &sigma);
        let target = &noise - &x0;
        let timestep = Tensor::from_slice(&ts)
            .to_kind(Kind::Float)
            .to_device(self.device);
        let (input, timestep, loss_mask) = if arch.first_frame_replacement {
            // TI2V-5B: a clip trains image-to-video from its own first frame (clean latent frame 0 at
            // timestep 0, out of the loss), a still image text-to-video.
            let image_to_video = x0.size()[2] > 1 && job::clips_train_image_to_video(&self.job.job);
            let ti2v = crate::ti2v::training_input(&xt, &x0, &timestep, image_to_video)?;
            (ti2v.input, ti2v.timestep, ti2v.loss_mask)
        } else if ys.is_empty() {
            // T2V: x_t alone (16 channels).
            (xt, timestep, None)
        } else {
            // I2V: [x_t | mask | image latent] (36 channels).
            (Tensor::cat(&[xt, Tensor::stack(&ys, 0)], 1), timestep, None)
        };
        let input = input.to_kind(self.kind);
        let mean_timestep = ts.iter().sum::<f64>() / ts.len() as f64;
        Ok(MicroBatch {
            input,
            target,
            timestep,
            loss_mask,
            context: Tensor::stack(&ctxs, 0)
                .to_device(self.device)
                .to_kind(self.kind),
            preservation_context: (!pres.is_empty()).then(|| {
                Tensor::stack(&pres, 0)
                    .to_device(self.device)
                    .to_kind(self.kind)
            }),
            weights: Tensor::from_slice(&weights)
                .to_kind(Kind::Float)
                .to_device(self.device),
            multiplier: Multiplier::per_sample(&mults, self.device),
            mean_timestep,
        })
    }

    /// One optimizer step of the expert whose turn it is. Returns (expert, loss, main, preservation,
    /// grad norm, mean timestep), or `None` for the loss when the step was skipped as non-finite.
    pub(super) fn train_step(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.step;
        let expert = self.schedule.expert_at(step);
        let expert_step = self.schedule.steps_of(expert, step);
        self.activate(expert)?;
        let train = self.job.job.process().train.clone();
        let accum = train.gradient_accumulation.max(1) as u64;
        let has_pres = train.diff_output_preservation || train.blank_prompt_preservation;
        // Drawn once: after an out-of-memory fallback the step is repeated on the same data, noise
        // and timesteps, from zeroed gradients, so no item is skipped and no update is doubled.
        let mut batches: Vec<MicroBatch> = Vec::with_capacity(accum as usize);
        let (main_sum, pres_sum, t_sum) = 'attempt: loop {
            let (mut main_sum, mut pres_sum, mut t_sum) = (0.0, 0.0, 0.0);
            for micro in 0..accum {
                if batches.len() as u64 == micro {
                    batches.push(self.micro_batch(expert_step, micro, expert)?);
                }
                let mb = &batches[micro as usize];
                let policy = self.checkpoint_policy(expert, &mb.input)?;
                let result = crate::error::catch_libtorch(|| {
                    let losses = self.micro_step(expert, mb, policy, accum)?;
                    self.simulated_out_of_memory(&mb.input)?;
                    Ok(losses)
                });
                match result {
                    Ok((main, pres)) => {
                        main_sum += main;
                        pres_sum += pres;
                        t_sum += mb.mean_timestep;
                    }
                    Err(e) if memory::is_out_of_memory(&e) => {
                        if self.fall_back(expert, &mb.input, policy, &e)? {
                            continue 'attempt;
                        }
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            break (main_sum, pres_sum, t_sum);
        };
        let (mut main_sum, mut pres_sum, mut t_sum) = (main_sum, pres_sum, t_sum);
        if let Some(d) = &self.data {
            [main_sum, pres_sum, t_sum] = d.means([main_sum, pres_sum, t_sum])?;
        }
        let loss = main_sum + pres_sum;
        let scheduled = self.lr.at(step);
        let mut grad = self
            .trained(expert)
            .expect("only trained experts step")
            .flat
            .flat_grad();
        if let Some(d) = &self.data {
            // Every rank steps with the mean gradient, so every rank holds the same LoRA.
            d.average(&grad)?;
        }
        let er = self.trained_mut(expert).expect("only trained experts step");
        let norm = clip_grad_norm(&mut grad, train.max_grad_norm);
        er.flat.zero_grad();
        let pres = has_pres.then_some(pres_sum);
        if !loss.is_finite() || !norm.is_finite() {
            return Ok(StepOutcome {
                expert,
                loss: None,
                loss_main: main_sum,
                loss_preservation: pres,
                grad_norm: norm,
                timestep: t_sum / accum as f64,
                lr: 0.0,
            });
        }
        // Prodigy's step is d·lr: the rate reported is the one applied.
        let lr = er.optimizer.effective_lr(scheduled);
        er.optimizer.update(&er.flat, &grad, scheduled);
        if let Some(ema) = &mut er.ema {
            ema.update(&er.flat.flat);
        }
        Ok(StepOutcome {
            expert,
            loss: Some(loss),
            loss_main: main_sum,
            loss_preservation: pres,
            grad_norm: norm,
            timestep: t_sum / accum as f64,
            lr,
        })
    }

    /// Forward and backward of one micro-batch (and its preservation pass): LoRA gradients
    /// accumulate; returns the main and preservation losses.
    fn micro_step(
        &self,
        expert: Expert,
        mb: &MicroBatch,
        policy: CheckpointPolicy,
        accum: u64,
    ) -> Result<(f64, f64), TrainError> {
        let train = &self.job.job.process().train;
        let has_pres = train.diff_output_preservation || train.blank_prompt_preservation;
        let pres_mult = if train.diff_output_preservation {
            train.diff_output_preservation_multiplier
        } else {
            train.blank_prompt_preservation_multiplier
        };
        let er = self.trained(expert).expect("only trained experts step");
        // DOP / blank-prompt preservation: what the base model says for the class (or blank) prompt.
        let prior = match &mb.preservation_context {
            Some(ctx) if has_pres => Some(tch::no_grad(|| {
                er.model.forward(&mb.input, &mb.timestep, ctx, None)
            })?),
            _ => None,
        };
        let apply = LoraApply {
            set: &er.lora,
            // The micro-batch keeps its own: a repeated step applies it again.
            multiplier: match &mb.multiplier {
                Multiplier::Scalar(v) => Multiplier::Scalar(*v),
                Multiplier::PerSample(t) => Multiplier::PerSample(t.shallow_clone()),
            },
        };
        let (loss_type, dg) = (
            train.loss_type,
            train
                .do_differential_guidance
                .then_some(train.differential_guidance_scale),
        );
        let main = forward_backward(
            &er.model,
            &mb.input,
            &mb.timestep,
            &mb.context,
            &apply,
            policy,
            |pred| {
                let target = match dg {
                    Some(s) => loss::differential_target(pred, &mb.target, s),
                    None => mb.target.shallow_clone(),
                };
                let per = match &mb.loss_mask {
                    None => loss::per_sample(loss_type, pred, &target),
                    Some(mask) => loss::per_sample_masked(loss_type, pred, &target, mask)?,
                };
                Ok(loss::weighted_mean(&per, &mb.weights) / accum as f64)
            },
        )?;
        let mut pres_loss = 0.0;
        if let (Some(prior), Some(ctx)) = (&prior, &mb.preservation_context) {
            let pres = forward_backward(
                &er.model,
                &mb.input,
                &mb.timestep,
                ctx,
                &apply,
                policy,
                |pred| Ok((pred - prior).square().mean(Kind::Float) * (pres_mult / accum as f64)),
            )?;
            pres_loss = pres.double_value(&[]);
        }
        Ok((main.double_value(&[]), pres_loss))
    }

    /// With `low_vram`, parks every other expert in pinned host memory and brings `expert` to the GPU.
    pub(super) fn activate(&mut self, expert: Expert) -> Result<(), TrainError> {
        if !self.job.job.process().model.low_vram {
            return Ok(());
        }
        for e in self
            .experts
            .iter_mut()
            .filter(|e| e.expert != expert && !e.model.is_parked())
        {
            let report = e.model.offload()?;
            self.folder.log(&format!(
                "{} expert parked in host memory ({report})",
                e.expert.name()
            ));
            self.memory.models_moved();
        }
        // Field-level borrow: the block below also uses the device and the folder.
        if let Some(e) = self
            .experts
            .iter_mut()
            .find(|e| e.expert == expert && e.model.is_parked())
        {
            let report = e.model.load_to(self.device)?;
            self.folder.log(&format!(
                "{} expert back on {:?} ({report})",
                expert.name(),
                self.device
            ));
            self.memory.models_moved();
        }
        Ok(())
    }

    /// Trains one optimizer step (the expert whose turn it is) and moves the step counter on.
    pub fn advance(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.step;
        let outcome = crate::error::catch_libtorch(|| self.train_step())
            .map_err(|e| crate::error::classify_torch_error(e, step))?;
        self.step += 1;
        Ok(outcome)
    }
}
