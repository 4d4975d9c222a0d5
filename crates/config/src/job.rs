//! The whole job: `job`, `config.name`, `config.process[0]` and `meta`, as AI Toolkit lays it out.

use crate::choice::{choice_serde, Choice};
use crate::dataset::{read_dataset, DatasetConfig};
use crate::logging::{read_logging, LoggingConfig};
use crate::model::{read_model, ModelConfig};
use crate::network::{read_network, NetworkConfig};
use crate::node::Node;
use crate::reader::{ai, Ctx, Neutral, Section, Unused, UnusedKey};
use crate::sample::{read_sample, SampleConfig};
use crate::save::{read_save, SaveConfig};
use crate::schema::KeyKind;
use crate::train::{read_train, TrainConfig};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

/// A training job in AI Toolkit's format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `job`: always `extension` (AI Toolkit's job type for trainers).
    pub job: String,
    pub config: JobConfig,
    /// `meta`: free key/values, copied into the LoRA files' metadata (`[name]` replaced).
    #[serde(default)]
    pub meta: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// `name`: the job's name; outputs go to `<training_folder>/<name>/`.
    pub name: String,
    /// `process`: exactly one trainer process (reading and deserializing guarantee it).
    #[serde(deserialize_with = "exactly_one_process")]
    pub process: Vec<Process>,
}

impl Job {
    /// The single trainer process.
    pub fn process(&self) -> &Process {
        self.config
            .process
            .first()
            .expect("a Job holds exactly one process: parse_job and Deserialize guarantee it")
    }

    /// The single trainer process, to edit.
    pub fn process_mut(&mut self) -> &mut Process {
        self.config
            .process
            .first_mut()
            .expect("a Job holds exactly one process: parse_job and Deserialize guarantee it")
    }

    /// Where this job writes its LoRA files, samples and state: `<training_folder>/<name>`.
    pub fn output_folder(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.process().training_folder).join(&self.config.name)
    }
}

fn exactly_one_process<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Process>, D::Error> {
    let process = Vec::<Process>::deserialize(d)?;
    if process.len() != 1 {
        return Err(serde::de::Error::custom(format!(
            "config.process must hold exactly one trainer process, found {}",
            process.len()
        )));
    }
    Ok(process)
}

/// AI Toolkit's trainer process types; all run the same training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessType {
    #[default]
    SdTrainer,
    /// What AI Toolkit's UI writes.
    DiffusionTrainer,
    /// AI Toolkit's legacy UI name.
    UiTrainer,
}

impl Choice for ProcessType {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("sd_trainer", ProcessType::SdTrainer),
        ("diffusion_trainer", ProcessType::DiffusionTrainer),
        ("ui_trainer", ProcessType::UiTrainer),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("concept_slider", "concept sliders are not implemented"),
        ("slider", "concept sliders are not implemented"),
        ("caption", "captioning jobs are not implemented"),
    ];
}
choice_serde!(ProcessType);

/// The trainer process: everything about one LoRA training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    /// `type`: `sd_trainer`, `diffusion_trainer` or `ui_trainer` (all the same trainer).
    #[serde(rename = "type")]
    pub process_type: ProcessType,
    /// `training_folder`: root of the output folders. Default `output` (relative to the working
    /// directory, as in AI Toolkit).
    pub training_folder: String,
    /// `device`: `cuda`, `cuda:N` or `cpu` (the tiny demo model only). Default `cuda`.
    pub device: String,
    /// `trigger_word`: prepended to captions that lack it; replaces `[trigger]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_word: Option<String>,
    /// `training_seed`: seeds every random choice of the run (absent: a random seed, recorded in state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_seed: Option<u64>,
    /// `performance_log_every`: print step timings every N steps (0: never).
    pub performance_log_every: u32,
    pub network: NetworkConfig,
    pub save: SaveConfig,
    pub datasets: Vec<DatasetConfig>,
    pub train: TrainConfig,
    pub model: ModelConfig,
    pub sample: SampleConfig,
    pub logging: LoggingConfig,
}

impl Default for Process {
    fn default() -> Self {
        Process {
            process_type: ProcessType::SdTrainer,
            training_folder: "output".to_string(),
            device: "cuda".to_string(),
            trigger_word: None,
            training_seed: None,
            performance_log_every: 0,
            network: NetworkConfig::default(),
            save: SaveConfig::default(),
            datasets: Vec::new(),
            train: TrainConfig::default(),
            model: ModelConfig::default(),
            sample: SampleConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

fn read_process(s: &mut Section, job_name: &str) -> Process {
    let d = Process::default();
    let process_type = match s.raw(
        "type",
        KeyKind::Choice,
        json!(d.process_type.name()),
        ai("Trainer type: sd_trainer, diffusion_trainer or ui_trainer"),
    ) {
        None => {
            let path = s.key_path("type");
            s.ctx().error_at(
                &path,
                "the process has no `type`",
                "add `type: sd_trainer` to the process",
            );
            d.process_type
        }
        Some(node) => match node.as_str() {
            Some(text) => s
                .parse_choice("type".into(), node, text)
                .unwrap_or(d.process_type),
            None => {
                s.invalid(
                    "type".into(),
                    node,
                    format!("expected text, found {}", node.show()),
                    "write type: sd_trainer".into(),
                );
                d.process_type
            }
        },
    };
    if let Some(node) = s.raw(
        "name",
        KeyKind::Text,
        json!(null),
        ai("Process name; must equal config.name if set"),
    ) {
        if node.as_str() != Some(job_name) {
            s.invalid(
                "name".into(),
                node,
                format!(
                    "a process name ({}) different from config.name is not supported",
                    node.show()
                ),
                "remove it; the output folder is <training_folder>/<config.name>".into(),
            );
        }
    }
    let mut process = Process {
        process_type,
        training_folder: s.text(
            "training_folder",
            &d.training_folder,
            ai("Root of the output folders"),
        ),
        device: s.text(
            "device",
            &d.device,
            ai("cuda, cuda:N, or cpu (demo model only)"),
        ),
        trigger_word: s.opt_text(
            "trigger_word",
            ai("Trigger word, prepended to captions that lack it"),
        ),
        training_seed: s.opt_uint64("training_seed", ai("Seed of the whole run")),
        performance_log_every: s.uint(
            "performance_log_every",
            d.performance_log_every,
            ai("Print step timings every N steps"),
        ),
        network: s.section("network", ai("The LoRA adapter"), read_network),
        save: s.section("save", ai("Checkpoint files"), read_save),
        datasets: s.items("datasets", ai("Training data folders"), |d, _| {
            read_dataset(d)
        }),
        train: s.section("train", ai("Optimisation"), read_train),
        model: s.section("model", ai("Base model"), read_model),
        sample: s.section("sample", ai("Preview videos"), read_sample),
        logging: s.section("logging", ai("Logging"), read_logging),
    };
    adopt_single_dataset_batch_size(&mut process, s);
    // The sampling shift's default is the arch's official one (5 for I2V, 12 for T2V); the sample
    // section is read without knowing the arch.
    let shift_key = s.key_path("sample.shift");
    if !s.ctx().written.contains_key(&shift_key) {
        process.sample.shift = process.model.arch.facts().sample_shift;
    }
    // TI2V-5B's own defaults: 24 fps and guidance 5 (the A14B defaults are the section's).
    let arch = process.model.arch.facts();
    if arch.one_transformer {
        let (fps_key, guidance_key) = (
            s.key_path("sample.fps"),
            s.key_path("sample.guidance_scale"),
        );
        if !s.ctx().written.contains_key(&fps_key) {
            process.sample.fps = arch.fps;
        }
        if !s.ctx().written.contains_key(&guidance_key) {
            process.sample.guidance_scale = arch.guidance_high;
        }
    }
    s.unused(PROCESS_UNUSED);
    process
}

/// AI Toolkit's UI writes `batch_size` on the dataset: with one dataset and no `train.batch_size`,
/// that is the job's batch size. Any other disagreement is reported by validation.
fn adopt_single_dataset_batch_size(process: &mut Process, s: &mut Section) {
    let [dataset] = process.datasets.as_slice() else {
        return;
    };
    let train_key = format!("{}.train.batch_size", s.key_path("").trim_end_matches('.'));
    let train_written = s
        .ctx()
        .written
        .contains_key(train_key.trim_start_matches('.'));
    if let (Some(n), false) = (dataset.batch_size, train_written) {
        process.train.batch_size = n;
    }
}

/// Reads a whole job from the tree (whose root must be a mapping). Always yields a job with exactly
/// one process; everything missing or wrong is in `ctx.findings`.
pub(crate) fn read_job(root: &Node, ctx: &mut Ctx) -> Job {
    let describing = ctx.schema.is_some();
    let mut s = Section::root(root, ctx);
    let job_kind = s.text("job", "extension", ai("Job type; always extension"));
    if !describing && root.get("job").is_none() {
        s.ctx().error_at(
            "job",
            "the file has no `job` key",
            "add `job: extension` at the top",
        );
    } else if job_kind != "extension" {
        s.ctx().error_at(
            "job",
            format!("`job: {job_kind}` is not a trainer job"),
            "write `job: extension` (AI Toolkit's job type for trainers)",
        );
    }
    let (name, process) = s.section("config", ai("The job"), |c| {
        let name = c.text(
            "name",
            "",
            ai("Job name; outputs go to <training_folder>/<name>"),
        );
        if !describing && name.trim().is_empty() {
            let path = c.key_path("name");
            c.ctx().error_at(
                &path,
                "config.name is missing or empty",
                "add `name: my_lora_v1` under config",
            );
        }
        let process_path = c.key_path("process");
        let (first, count) = c.first_item("process", ai("Exactly one trainer process"), |p| {
            read_process(p, &name)
        });
        if !describing {
            if count == 0 {
                c.ctx().error_at(
                    &process_path,
                    "config.process has no trainer process",
                    "add a process list with one `- type: sd_trainer` entry (see examples/)",
                );
            } else if count > 1 {
                c.ctx().error_at(
                    &format!("{process_path}[1]"),
                    format!("config.process has {count} processes; wanlora runs one per job"),
                    "move each further process into a job file of its own",
                );
            }
        }
        c.accept(
            "device",
            "AI Toolkit's job-level device; the process device decides",
        );
        let process = first.unwrap_or_default();
        (name, process)
    });
    let meta = s.free_map("meta", ai("Free metadata copied into the LoRA files"));
    s.finish();
    Job {
        job: job_kind,
        config: JobConfig {
            name,
            process: vec![process],
        },
        meta,
    }
}

/// Keys of this section that wanlora reads but does not act on, and why.
const PROCESS_UNUSED: &[UnusedKey] = &[
    (
        "sqlite_db_path",
        Unused::Accepted,
        "AI Toolkit's UI database; wanlora's UI reads the output folder",
    ),
    (
        "log_dir",
        Unused::Refused(Neutral::Off),
        "TensorBoard logs are not written; metrics go to metrics.jsonl in the output folder",
    ),
    (
        "first_sample",
        Unused::Refused(Neutral::Off),
        "a separate first-sample config is not implemented; the sample section is used",
    ),
    (
        "guidance",
        Unused::Refused(Neutral::Off),
        "only LoRA training of Wan 2.2 I2V is implemented",
    ),
    (
        "embedding",
        Unused::Refused(Neutral::Off),
        "only LoRA training of Wan 2.2 I2V is implemented",
    ),
    (
        "decorator",
        Unused::Refused(Neutral::Off),
        "only LoRA training of Wan 2.2 I2V is implemented",
    ),
    (
        "adapter",
        Unused::Refused(Neutral::Off),
        "only LoRA training of Wan 2.2 I2V is implemented",
    ),
    (
        "slider",
        Unused::Refused(Neutral::Off),
        "only LoRA training of Wan 2.2 I2V is implemented",
    ),
    (
        "do_lorm",
        Unused::Refused(Neutral::Off),
        "LoRM is not implemented",
    ),
    ("lorm_extract_mode", Unused::Accepted, "only with do_lorm"),
    (
        "lorm_extract_mode_param",
        Unused::Accepted,
        "only with do_lorm",
    ),
    (
        "torch_profiler",
        Unused::Refused(Neutral::Off),
        "the PyTorch profiler is not available; use --verbose timings",
    ),
];
