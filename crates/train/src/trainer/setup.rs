//! Set-up: output folder, dataset scan, text and latent caching, the trained experts, and the
//! state of an earlier run in the same folder.

use super::*;

/// Tokens of the largest micro-batch this process trains: its dataset's batch (its share of it
/// among `ranks` data-parallel ranks) × latent frames × token rows × token columns (`bucket_step`
/// pixels per token side).
fn largest_tokens(catalog: &Catalog, bucket_step: u32, ranks: u32) -> u64 {
    catalog
        .usable_items()
        .map(|item| {
            let batch = (catalog.datasets[item.dataset].batch_size.max(1) as u64)
                .div_ceil(u64::from(ranks.max(1)));
            let frames = wanlora_spec::frames::latent_frames(item.bucket.frames as u32) as u64;
            let step = bucket_step.max(1);
            batch
                * frames
                * u64::from(item.bucket.height / step)
                * u64::from(item.bucket.width / step)
        })
        .max()
        .unwrap_or(0)
}

pub(super) fn parse_device(name: &str) -> Result<Device, TrainError> {
    let name = name.trim();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = match name {
        "cuda" | "" => 0,
        n => n
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| {
                TrainError::Setup(format!("device {n:?}: expected cpu, cuda or cuda:N"))
            })?,
    };
    if !wanlora_torch::cuda_available() {
        return Err(TrainError::Setup(format!(
            "device {name}: CUDA is not available here (see `wanlora doctor`); set `device: cpu` only for the tiny demo model"
        )));
    }
    let visible = tch::Cuda::device_count().max(0) as usize;
    if index >= visible {
        return Err(TrainError::Setup(format!(
            "device cuda:{index}: this process sees {visible} GPU(s) (cuda:0 to cuda:{}; CUDA_VISIBLE_DEVICES={}); \
             name one of them",
            visible.saturating_sub(1),
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
        )));
    }
    Ok(Device::Cuda(index))
}

/// The GPU of a data-parallel rank with `local_rank` when the process sees `visible` GPUs: the
/// GPU of that index, or the one GPU a launcher gave this process (`srun --gpus-per-task=1` sets
/// CUDA_VISIBLE_DEVICES so: `assigned`). Ranks may share one GPU only over gloo (`may_share`); NCCL
/// refuses two ranks on one GPU, so that is named here rather than by NCCL.
fn local_gpu(
    local_rank: usize,
    visible: usize,
    assigned: bool,
    may_share: bool,
) -> Result<usize, TrainError> {
    let visible_devices =
        || std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
    match visible {
        n if local_rank < n => Ok(local_rank),
        1 if assigned || may_share => Ok(0),
        1 => Err(TrainError::Setup(format!(
            "LOCAL_RANK={local_rank} on a machine with one GPU: the ranks would share it, which NCCL refuses; \
             start one rank per GPU, give each process its own GPU (CUDA_VISIBLE_DEVICES), or set \
             WANLORA_DIST_BACKEND=gloo"
        ))),
        n => Err(TrainError::Setup(format!(
            "LOCAL_RANK={local_rank}, but this process sees {n} GPU(s) (CUDA_VISIBLE_DEVICES={}); start at most \
             one rank per visible GPU on each machine, or give each process one GPU",
            visible_devices()
        ))),
    }
}

/// The device this part trains on: the job's, an expert rank's, or a data-parallel rank's GPU
/// (from LOCAL_RANK, [`local_gpu`]).
fn part_device(part: &JobPart, job_device: &str) -> Result<Device, TrainError> {
    match part {
        JobPart::Data { local_rank, place } if job_device.trim() != "cpu" => {
            if !wanlora_torch::cuda_available() {
                return parse_device(job_device);
            }
            let visible = tch::Cuda::device_count().max(0) as usize;
            let assigned = std::env::var_os("CUDA_VISIBLE_DEVICES").is_some();
            let may_share = place.backend == crate::data_parallel::DistBackend::Gloo;
            Ok(Device::Cuda(local_gpu(
                *local_rank as usize,
                visible,
                assigned,
                may_share,
            )?))
        }
        _ => parse_device(&part.device(job_device)),
    }
}

/// How the experts are stored: fp8 weights (and fp8 matmuls) and streamed blocks, from the job.
pub(super) fn transformer_load_options(
    model: &wanlora_config::ModelConfig,
) -> Result<LoadOptions, TrainError> {
    let fp8 = match (model.quantize, model.qtype, model.fp8_matmul) {
        (false, _, _) => Fp8Mode::Off,
        (true, wanlora_config::QType::Uint4, _) => Fp8Mode::Uint4,
        (true, _, false) => Fp8Mode::WeightOnly,
        (true, _, true) => Fp8Mode::Matmul,
    };
    let offload = if model.layer_offloading {
        // The share is of A14B's 40 blocks; smaller models stream at most all of theirs.
        let blocks =
            wanlora_models::transformer::TransformerConfig::wan22_i2v_a14b().num_layers as usize;
        Some(
            BlockOffload::from_percent(
                100.0 * model.layer_offloading_transformer_percent,
                blocks,
                2,
            )
            .map_err(|e| {
                TrainError::Setup(format!("model.layer_offloading_transformer_percent: {e}"))
            })?,
        )
    } else {
        None
    };
    Ok(LoadOptions {
        fp8,
        fp8_embeddings: false,
        offload,
    })
}

impl Trainer {
    pub(super) fn setup(
        job: LoadedJob,
        opts: RunOptions,
        folder: JobFolder,
        lock: Option<JobLock>,
        part: JobPart,
    ) -> Result<Trainer, TrainError> {
        let process = job.job.process().clone();
        let train = &process.train;
        let device = part_device(&part, &process.device)?;
        let data = match part.data_place() {
            Some(place) => Some(crate::data_parallel::DataRank::join(place, device)?),
            None => None,
        };
        folder.write_pid()?;
        // The supervisor of an expert-parallel job, or rank 0 of a data-parallel one, does these.
        if folder.rank.is_none() && !folder.quiet {
            if folder.repair_metrics()? > 0 {
                folder.log("metrics.jsonl: cut its last line, torn by a killed run");
            }
            wanlora_torch::weights::write_atomic(
                &folder.path(job_folder::CONFIG_YAML),
                wanlora_config::to_yaml(&job.job).as_bytes(),
            )?;
        }
        let status = |phase, message: &str| Status::at(phase, 0, train.steps as u64, message);
        folder.write_status(&status(JobPhase::Starting, "Loading"))?;
        folder.log(&format!(
            "wanlora {} training {}",
            env!("CARGO_PKG_VERSION"),
            job.path.display()
        ));

        let kind = match train.dtype {
            TrainDtype::Bf16 => Kind::BFloat16,
            TrainDtype::Fp32 => Kind::Float,
        };
        let previous = crate::expert_parallel::previous_state(&folder, &part, &mut |warning| {
            eprintln!("warning: {warning}");
            folder.log(warning);
        })?;
        let seed = match (&previous, part.seed().or(process.training_seed)) {
            (Some((run, _)), _) => run.seed,
            (None, Some(s)) => s,
            (None, None) if data.is_some() => {
                return Err(TrainError::Setup(
                    "data-parallel training needs `training_seed` in the job (every rank must draw the same data order)".into(),
                ))
            }
            (None, None) => crate::expert_parallel::fresh_seed(),
        };

        // Data first: a broken dataset is reported before any model loads.
        let (specs, context) = job::dataset_specs(&job.job, seed);
        let mut catalog = Catalog::load(&specs, &context)?;
        if !catalog.problems.is_empty() {
            let summary = wanlora_data::summarise(&catalog.problems);
            eprintln!("{summary}");
            folder.log(&summary);
        }
        catalog.check_usable()?;
        if let Some(d) = &data {
            crate::data_parallel::check_batches(&catalog, d.world())?;
        }
        let mut validation = ValidationSet::load(&job.job, &specs, &context)?;

        let mut sources = ModelSource::for_training(
            job::model_spec(&job),
            process.model.arch,
            opts.hub.clone(),
            &folder.root,
        )?;
        if let (Fp8Mode::Uint4, Some(reference)) = (
            transformer_load_options(&process.model)?.fp8,
            &process.model.accuracy_recovery_adapter,
        ) {
            let path = sources.fetch_recovery_adapter(reference, &opts.hub)?;
            folder.log(&format!("accuracy recovery adapter: {}", path.display()));
        }
        let cache_root = folder.root.join("cache");
        let mut cache = Cache::open(&cache_root)?;

        let samples: Vec<SampleRequest> = if process.train.disable_sampling || folder.quiet {
            Vec::new()
        } else {
            (0..process.sample.samples.len())
                .filter_map(|i| {
                    SampleRequest::from_job(
                        &process.sample,
                        i,
                        process.model.arch,
                        process.model.boundary_ratio,
                    )
                    .transpose()
                })
                .collect::<Result<_, _>>()
                .map_err(|e| TrainError::Setup(format!("sample: {e}")))?
        };
        // Text: every caption (with dropout and DOP variants), the blank prompt and the sample
        // prompts are encoded once; then the encoder is freed.
        folder.write_status(&status(JobPhase::Caching, "Encoding captions"))?;
        let texts = {
            let encoder = sources.text_encoder(
                if device.is_cuda() {
                    Kind::BFloat16
                } else {
                    Kind::Float
                },
                device,
                process.model.quantizes_text_encoder(),
            )?;
            let tokenizer = sources.tokenizer()?;
            let mut te = Umt5TextEncoder {
                encoder: &encoder,
                tokenizer: &tokenizer,
                fingerprint: format!("umt5 {}", sources.fingerprint(Component::TextEncoder)),
            };
            let use_cache = context.cache_text_embeddings;
            let mut wanted: Vec<String> = if train.unload_text_encoder {
                // AI Toolkit's meaning: captions are not used, only the trigger word (or nothing).
                vec![
                    process.trigger_word.clone().unwrap_or_default(),
                    String::new(),
                ]
            } else {
                catalog.caption_texts()
            };
            wanted.push(String::new());
            wanted.extend(validation.iter().flat_map(ValidationSet::captions));
            for r in &samples {
                wanted.push(r.prompt.clone());
                wanted.push(r.negative_prompt.clone());
            }
            wanted.sort();
            wanted.dedup();
            let mut out = HashMap::new();
            for text in wanted {
                if folder.stop_requested() {
                    return Err(TrainError::StoppedDuringSetup {
                        phase: "encoding captions",
                    });
                }
                let t = text_embedding(&text, use_cache.then_some(&cache), &mut te)?;
                let ctx = t.get(encoders::CONTEXT).ok_or_else(|| {
                    TrainError::Setup("text cache entry without a context tensor".into())
                })?;
                out.insert(text, encoders::from_named(ctx, Kind::Float, Device::Cpu)?);
            }
            out
        };

        // Latents: the cache pass encodes every item of the caching datasets (progress bar); items of
        // other datasets are encoded when their batch comes.
        folder.write_status(&status(JobPhase::Caching, "Encoding latents"))?;
        let mut vae = sources.vae(
            if device.is_cuda() {
                Kind::BFloat16
            } else {
                Kind::Float
            },
            device,
        )?;
        vae.set_tiling(job::vae_tiling(&process.model))?;
        // Tiles change the encoded latents slightly (blended seams), so the cache is keyed by them.
        let vae_fingerprint = format!(
            "wan21-vae {:?} {:?} {}",
            vae.kind(),
            vae.tiling(),
            sources.fingerprint(Component::Vae)
        );
        {
            let mut enc = crate::setup_stop::StopChecked {
                inner: VaeLatentEncoder {
                    vae: &vae,
                    fingerprint: vae_fingerprint.clone(),
                    first_frame_condition: process.model.arch.facts().first_frame_condition,
                },
                folder: &folder,
            };
            let report = run_cache_pass(
                &mut catalog,
                &mut cache,
                Some(&mut enc),
                None,
                CachePassOptions {
                    progress: opts.progress,
                },
            )
            .map_err(crate::setup_stop::cache_pass_error)?;
            folder.log(&format!(
                "cache pass: {} encoded, {} reused, {} failed in {:.1} s",
                report.latents_encoded,
                report.latents_reused,
                report.failed.len(),
                report.seconds
            ));
            for problem in &report.failed {
                folder.log(&format!("cache pass: {problem}"));
            }
        }

        if let Some(v) = &mut validation {
            let mut enc = VaeLatentEncoder {
                vae: &vae,
                fingerprint: vae_fingerprint.clone(),
                first_frame_condition: process.model.arch.facts().first_frame_condition,
            };
            v.encode(&mut cache, &mut enc, &texts, seed, device)?;
        }
        let sampler = BatchSampler::new(&catalog, |i| !i.is_reg)?;
        let reg_sampler = if catalog.usable_items().any(|i| i.is_reg) {
            Some(BatchSampler::new(&catalog, |i| i.is_reg)?)
        } else {
            None
        };

        // The trained experts with fresh adapters; resume overwrites them below.
        let schedule = job::expert_schedule(&job.job);
        let rank = process.network.linear as i64;
        let alpha = process.network.alpha();
        let mut load = transformer_load_options(&process.model)?;
        let first_here = schedule.trained.iter().copied().find(|&e| part.trains(e));
        if let (Device::Cuda(index), None, None, Some(first)) =
            (device, &load.offload, train.keep_blocks.fixed(), first_here)
        {
            // Streaming chosen for the user when the largest bucket would not fit otherwise.
            let resident = if process.model.low_vram {
                1
            } else {
                schedule.trained.iter().filter(|&&e| part.trains(e)).count() as u64
            };
            wanlora_torch::cuda::empty_cache().map_err(|e| TrainError::Setup(e.to_string()))?;
            let free = wanlora_torch::cuda::available_bytes(index)
                .map_err(|e| TrainError::Setup(e.to_string()))?;
            if let Some((offload, line)) = super::memory::automatic_offload(
                &sources.transformer_config(first)?,
                kind,
                load.fp8,
                rank as u64,
                resident,
                largest_tokens(
                    &catalog,
                    process.model.arch.facts().bucket_step,
                    part.data_place().map_or(1, |p| p.world),
                ),
                free,
            ) {
                folder.log(&line);
                eprintln!("{line}");
                load.offload = Some(offload);
            }
        }
        let load = load;
        let mut experts = Vec::new();
        for &expert in schedule.trained.iter().filter(|&&e| part.trains(e)) {
            folder.write_status(&status(
                JobPhase::Starting,
                &format!("Loading the {} expert", expert.name()),
            ))?;
            let t0 = Instant::now();
            let mut model = sources.transformer(expert, kind, device, &load)?;
            folder.log(&format!(
                "{} expert loaded in {:.1} s",
                expert.name(),
                t0.elapsed().as_secs_f64()
            ));
            // Before any parking: the spare rows go where the weights are.
            if wanlora_models::lora::fused_lora_enabled() {
                let n = model.reserve_lora_rows(rank)?;
                folder.log(&format!(
                    "{} expert: LoRA down-projection fused into {n} block linears (WANLORA_FUSED_LORA)",
                    expert.name()
                ));
            }
            if process.model.low_vram && Some(expert) != first_here {
                // Loaded one at a time: the idle expert waits in pinned host memory.
                let report = model.offload()?;
                folder.log(&format!(
                    "{} expert parked in host memory ({report})",
                    expert.name()
                ));
            }
            let fresh = LoraSet::new_trainable(
                &model.config,
                rank,
                alpha,
                device,
                derive_seed(&[seed, 0xA0 + expert as u64]),
            );
            let flat = FlatParams::new(&fresh.parameters(), device);
            let lora = fresh.with_parameters(&flat.params);
            let optimizer = TrainOptimizer::new(&flat, train);
            let ema = train
                .ema_config
                .use_ema
                .then(|| Ema::new(&flat.flat, train.ema_config.ema_decay));
            experts.push(ExpertRun {
                expert,
                model,
                flat,
                lora,
                optimizer,
                ema,
                sampler: sampler.clone().with_stream(expert_stream(expert)),
                reg_sampler: reg_sampler
                    .as_ref()
                    .map(|s| s.clone().with_stream(expert_stream(expert))),
            });
        }

        let quiet = folder.quiet;
        let mut trainer = Trainer {
            schedule,
            lr: job::lr_schedule(train),
            boundary: process.model.boundary_ratio,
            text_len: 512,
            job,
            opts,
            folder,
            device,
            kind,
            seed,
            catalog,
            cache,
            texts,
            vae,
            vae_fingerprint,
            experts,
            step: 0,
            sources,
            load,
            samples,
            untrained: None,
            _lock: lock,
            part,
            data,
            validation: validation.filter(|_| !quiet),
            memory: Default::default(),
        };
        if let Some((run, dir)) =
            previous.filter(|_| !matches!(trainer.part, JobPart::Caches { .. }))
        {
            trainer.resume(&run, &dir)?;
        }
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_parallel_rank_takes_its_local_gpu_or_the_one_it_was_given() {
        assert_eq!(local_gpu(3, 4, false, false).unwrap(), 3);
        // srun --gpus-per-task=1: every process sees its own GPU as cuda:0.
        assert_eq!(local_gpu(3, 1, true, false).unwrap(), 0);
        // Two ranks on a one-GPU machine: over gloo they share it, NCCL would refuse.
        assert_eq!(local_gpu(1, 1, false, true).unwrap(), 0);
        let shared = local_gpu(1, 1, false, false).unwrap_err().to_string();
        assert!(shared.contains("WANLORA_DIST_BACKEND=gloo"), "{shared}");
        let message = local_gpu(5, 4, false, false).unwrap_err().to_string();
        assert!(
            message.contains("LOCAL_RANK=5") && message.contains("sees 4 GPU(s)"),
            "{message}"
        );
    }
}
