//! The catalog: every training item of a job's datasets, resolved from the folders — which file,
//! which frames, which bucket, which caption, which flip — plus the problems met on the way.
//!
//! A dataset with a list of resolutions becomes one resolved dataset per resolution (each clip
//! is trained at every listed size, as in AI Toolkit); `flip_x` / `flip_y` add mirrored copies
//! of every item.

use crate::bucket::{bucket_size_in_steps, BucketKey, BUCKET_STEP};
use crate::caption::{
    apply_trigger, caption_dropped, preservation_caption, read_caption, CaptionSource,
    DROPOUT_CAPTION,
};
use crate::media::{
    count_decoded_frames, decode_video_frames, load_image, probe, probe_image, Frames, ImageInfo,
    MediaError, MediaInfo,
};
use crate::problems::{shown_path, Problem, ProblemKind};
use crate::rng::{derive_seed, text_seed};
use crate::sampling::{plan_frames, ClipTiming, FramePlan, SamplingMode, SamplingNote};
use crate::scan::{find_media, MediaKind, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS};
use crate::spec::{DatasetSpec, JobContext, SpecError};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Errors that stop a job from starting: bad settings, or a dataset with nothing to train on.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the job has no datasets; add at least one entry under `datasets:`")]
    NoDatasets,
    #[error("{key}: folder {} does not exist or is not a folder; fix the path", folder.display())]
    FolderMissing { key: String, folder: PathBuf },
    #[error("{key}: no video ({}) or image ({}) files in {}", VIDEO_EXTENSIONS.join(" "), IMAGE_EXTENSIONS.join(" "), folder.display())]
    NoMedia { key: String, folder: PathBuf },
    #[error("{key}: no usable item in {}:\n{}", folder.display(), list_reasons(reasons))]
    EmptyDataset {
        key: String,
        folder: PathBuf,
        reasons: Vec<Problem>,
    },
}

fn list_reasons(reasons: &[Problem]) -> String {
    reasons
        .iter()
        .map(|p| format!("  {}: {}", shown_path(&p.path), p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Mirroring applied to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Flip {
    pub x: bool,
    pub y: bool,
}

impl std::fmt::Display for Flip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.x, self.y) {
            (false, false) => write!(f, "none"),
            (true, false) => write!(f, "flip_x"),
            (false, true) => write!(f, "flip_y"),
            (true, true) => write!(f, "flip_x+flip_y"),
        }
    }
}

/// What probing found about a source file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SourceFacts {
    Video(MediaInfo),
    Image(ImageInfo),
}

impl SourceFacts {
    /// Displayed size (rotation and pixel aspect applied).
    pub fn display_size(&self) -> (u32, u32) {
        match self {
            Self::Video(info) => (info.display_width, info.display_height),
            Self::Image(info) => (info.width, info.height),
        }
    }
}

/// One resolved dataset: a dataset of the job at one of its resolutions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedDataset {
    /// Place of the dataset in the job's `datasets:` list.
    pub spec_index: usize,
    pub folder: PathBuf,
    pub resolution: u32,
    pub batch_size: usize,
    pub is_reg: bool,
}

/// One training item: a file, its frames, its bucket, its caption.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataItem {
    /// Index in [`Catalog::items`].
    pub id: usize,
    /// Index in [`Catalog::datasets`].
    pub dataset: usize,
    pub path: PathBuf,
    pub kind: MediaKind,
    pub source: SourceFacts,
    pub bucket: BucketKey,
    /// Source frame numbers, in order (one `0` for images).
    pub frame_indices: Vec<usize>,
    pub sampling: SamplingMode,
    /// Seed of the start frame in real-time sampling (from the job seed and the file's path).
    pub start_seed: u64,
    pub flip: Flip,
    /// The caption after trigger handling.
    pub caption: String,
    pub caption_source: CaptionSource,
    /// The caption with the trigger replaced by the preservation class (DOP), if DOP is on.
    pub preservation_caption: Option<String>,
    pub caption_dropout_rate: f64,
    pub network_weight: f64,
    pub loss_multiplier: f64,
    pub is_reg: bool,
    pub num_repeats: usize,
    pub cache_latents: bool,
}

/// Frames of an item, with anything noteworthy that loading found.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedFrames {
    pub frames: Frames,
    /// Source frame numbers actually decoded (differ from the item's plan only when the header's
    /// frame count was wrong).
    pub frame_indices: Vec<usize>,
    pub problems: Vec<Problem>,
}

/// All items of a job, the resolved datasets and the problems found.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub datasets: Vec<ResolvedDataset>,
    pub items: Vec<DataItem>,
    pub problems: Vec<Problem>,
    /// Items left out after loading (decoding failed in a cache pass).
    pub excluded: BTreeSet<usize>,
    /// The job seed (data order, dropout).
    pub seed: u64,
}

/// What every file of one dataset shares while its items are made.
struct DatasetPlan<'a> {
    spec: &'a DatasetSpec,
    job: &'a JobContext,
    folder: &'a Path,
    trigger: Option<&'a str>,
    caption_ext: String,
    /// Index of the dataset's first resolution in [`Catalog::datasets`].
    first_dataset: usize,
    flips: Vec<Flip>,
}

impl Catalog {
    /// Scans, probes and resolves every dataset. Files with problems are reported in
    /// [`Catalog::problems`] and the rest go on; a dataset left without any usable file is an
    /// error naming the folder and each file's reason.
    pub fn load(specs: &[DatasetSpec], job: &JobContext) -> Result<Catalog, DataError> {
        if specs.is_empty() {
            return Err(DataError::NoDatasets);
        }
        for (index, spec) in specs.iter().enumerate() {
            spec.validate(index)?;
        }
        let mut catalog = Catalog {
            datasets: Vec::new(),
            items: Vec::new(),
            problems: Vec::new(),
            excluded: BTreeSet::new(),
            seed: job.seed,
        };
        let mut probes: HashMap<PathBuf, Result<SourceFacts, MediaError>> = HashMap::new();
        for (spec_index, spec) in specs.iter().enumerate() {
            catalog.add_dataset(spec_index, spec, job, &mut probes)?;
        }
        Ok(catalog)
    }

    fn add_dataset(
        &mut self,
        spec_index: usize,
        spec: &DatasetSpec,
        job: &JobContext,
        probes: &mut HashMap<PathBuf, Result<SourceFacts, MediaError>>,
    ) -> Result<(), DataError> {
        let key = format!("datasets[{spec_index}].folder_path");
        let folder = spec.folder_path.clone();
        if !folder.is_dir() {
            return Err(DataError::FolderMissing { key, folder });
        }
        let found = find_media(&folder);
        let files = found.files;
        let walk_problems = found.failures.into_iter().map(|f| Problem {
            path: f.path,
            kind: ProblemKind::WalkError,
            message: f.reason,
        });
        let unsupported = found.unsupported.into_iter().map(|f| Problem {
            path: f.path,
            kind: ProblemKind::UnsupportedFormat,
            message: f.reason,
        });
        let mut problems: Vec<Problem> = walk_problems.chain(unsupported).collect();
        if files.is_empty() && problems.is_empty() {
            return Err(DataError::NoMedia { key, folder });
        }
        let unprobed: Vec<(PathBuf, MediaKind)> = files
            .iter()
            .filter(|(path, _)| !probes.contains_key(path))
            .cloned()
            .collect();
        for (path, facts) in probe_all(&unprobed) {
            probes.insert(path, facts);
        }

        let first_dataset = self.datasets.len();
        for &resolution in &spec.resolutions {
            self.datasets.push(ResolvedDataset {
                spec_index,
                folder: folder.clone(),
                resolution,
                batch_size: spec.batch_size.unwrap_or(job.batch_size.max(1)),
                is_reg: spec.is_reg,
            });
        }
        let mut flips = vec![Flip::default()];
        if spec.flip_x {
            flips.push(Flip { x: true, y: false });
        }
        if spec.flip_y {
            flips.push(Flip { x: false, y: true });
        }
        let plan = DatasetPlan {
            spec,
            job,
            folder: &folder,
            trigger: spec
                .trigger_word
                .as_deref()
                .or(job.trigger_word.as_deref())
                .map(str::trim)
                .filter(|t| !t.is_empty()),
            caption_ext: spec.caption_extension(),
            first_dataset,
            flips,
        };

        let mut usable_files = 0;
        for (path, kind) in &files {
            match probes.get(path) {
                Some(Ok(facts)) if self.add_file(&plan, path, *kind, facts, &mut problems) => {
                    usable_files += 1;
                }
                Some(Ok(_)) | None => {}
                Some(Err(err)) => problems.push(problem_from_media_error(path, err)),
            }
        }
        if usable_files == 0 {
            return Err(DataError::EmptyDataset {
                key,
                folder,
                reasons: problems,
            });
        }
        for problem in problems {
            if !self.problems.contains(&problem) {
                self.problems.push(problem);
            }
        }
        Ok(())
    }

    /// Adds the items of one probed file: its caption, its frames, one bucket per resolution,
    /// one item per flip. Returns false (and records why) when no bucket fits the file.
    fn add_file(
        &mut self,
        plan: &DatasetPlan<'_>,
        path: &Path,
        kind: MediaKind,
        facts: &SourceFacts,
        problems: &mut Vec<Problem>,
    ) -> bool {
        let spec = plan.spec;
        let raw = read_caption(
            path,
            plan.folder,
            &plan.caption_ext,
            spec.default_caption.as_deref(),
        );
        let caption = apply_trigger(&raw.text, plan.trigger, !spec.is_reg);
        let preservation = plan
            .job
            .preservation_class
            .as_deref()
            .and_then(|class| preservation_caption(&caption, plan.trigger, class));
        let own_caption = crate::caption::caption_path(path, &plan.caption_ext);
        let mut file_problems = caption_problems(path, &raw, &own_caption);
        file_problems.extend(source_problems(path, facts));

        let sampling = sampling_mode(spec, kind);
        let start_seed = derive_seed(&[plan.job.seed, text_seed(&path.to_string_lossy())]);
        let frames = match facts {
            SourceFacts::Video(info) => plan_frames(timing(info), sampling, start_seed),
            SourceFacts::Image(_) => FramePlan {
                indices: vec![0],
                notes: Vec::new(),
            },
        };
        file_problems.extend(frames.notes.iter().map(|note| Problem {
            path: path.to_path_buf(),
            kind: match note {
                SamplingNote::Repeated { .. } => ProblemKind::ShortClip,
                SamplingNote::Stretched { .. } => ProblemKind::Stretched,
                SamplingNote::SlowSource { .. } => ProblemKind::SlowSource,
            },
            message: note.to_string(),
        }));

        let (width, height) = facts.display_size();
        let mut used = false;
        for (offset, &resolution) in spec.resolutions.iter().enumerate() {
            let step = plan.job.bucket_step.unwrap_or(BUCKET_STEP);
            let Some(size) = bucket_size_in_steps(width, height, resolution, step) else {
                continue;
            };
            used = true;
            let bucket = BucketKey {
                width: size.width,
                height: size.height,
                frames: frames.indices.len(),
            };
            for &flip in &plan.flips {
                let id = self.items.len();
                self.items.push(DataItem {
                    id,
                    dataset: plan.first_dataset + offset,
                    path: path.to_path_buf(),
                    kind,
                    source: facts.clone(),
                    bucket,
                    frame_indices: frames.indices.clone(),
                    sampling,
                    start_seed,
                    flip,
                    caption: caption.clone(),
                    caption_source: raw.source.clone(),
                    preservation_caption: preservation.clone(),
                    caption_dropout_rate: spec.caption_dropout_rate,
                    network_weight: spec.network_weight,
                    loss_multiplier: spec.loss_multiplier,
                    is_reg: spec.is_reg,
                    num_repeats: spec.num_repeats,
                    cache_latents: spec.cache_latents,
                });
            }
        }
        if used {
            problems.extend(file_problems);
        } else {
            problems.push(Problem {
                path: path.to_path_buf(),
                kind: ProblemKind::TooSmall,
                message: format!("{width}x{height} is smaller than one 16x16 bucket"),
            });
        }
        used
    }

    /// Items that take part in training (not excluded).
    pub fn usable_items(&self) -> impl Iterator<Item = &DataItem> {
        self.items
            .iter()
            .filter(|item| !self.excluded.contains(&item.id))
    }

    /// Leaves an item out from now on, recording why. Every item of the same file, resolution
    /// and flip alike is left out too, since they would fail the same way.
    pub fn exclude_file(&mut self, path: &Path, problem: Problem) {
        for item in &self.items {
            if item.path == path {
                self.excluded.insert(item.id);
            }
        }
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// Fails when exclusions left a dataset without items, naming the folder and the reasons.
    pub fn check_usable(&self) -> Result<(), DataError> {
        for (index, dataset) in self.datasets.iter().enumerate() {
            let members: Vec<&DataItem> =
                self.items.iter().filter(|i| i.dataset == index).collect();
            if !members.is_empty() && members.iter().all(|i| self.excluded.contains(&i.id)) {
                let reasons = self
                    .problems
                    .iter()
                    .filter(|p| p.kind.skips_item() && p.path.starts_with(&dataset.folder))
                    .cloned()
                    .collect();
                return Err(DataError::EmptyDataset {
                    key: format!("datasets[{}].folder_path", dataset.spec_index),
                    folder: dataset.folder.clone(),
                    reasons,
                });
            }
        }
        Ok(())
    }

    /// The caption an occurrence of an item trains with: the empty caption when caption dropout
    /// hits (deterministic in seed, item, epoch and repeat), else the item's caption.
    pub fn caption_for<'a>(&self, item: &'a DataItem, epoch: u64, repeat: u32) -> &'a str {
        if caption_dropped(self.seed, item.id, epoch, repeat, item.caption_dropout_rate) {
            DROPOUT_CAPTION
        } else {
            &item.caption
        }
    }

    /// Every distinct text the text encoder must see: captions, the dropout caption where
    /// dropout is on, and preservation captions. Sorted.
    pub fn caption_texts(&self) -> Vec<String> {
        let mut texts = BTreeSet::new();
        for item in self.usable_items() {
            texts.insert(item.caption.clone());
            if item.caption_dropout_rate > 0.0 {
                texts.insert(DROPOUT_CAPTION.to_string());
            }
            if let Some(p) = &item.preservation_caption {
                texts.insert(p.clone());
            }
        }
        texts.into_iter().collect()
    }

    /// Decodes an item's frames at its bucket size, flipped as the item says. When a clip's
    /// header promised more frames than it has, the decodable frames are counted, the frames
    /// chosen again from that count, and the fact reported.
    pub fn load_frames(&self, item: &DataItem) -> Result<LoadedFrames, MediaError> {
        let size = item.bucket.size();
        let mut problems = Vec::new();
        let (mut frames, indices) = match &item.source {
            SourceFacts::Image(_) => (load_image(&item.path, size)?, item.frame_indices.clone()),
            SourceFacts::Video(info) => {
                match decode_video_frames(&item.path, info, &item.frame_indices, size) {
                    Ok(frames) => (frames, item.frame_indices.clone()),
                    Err(short @ MediaError::ShortDecode { .. }) => {
                        let real = count_decoded_frames(&item.path).unwrap_or(0);
                        if real == 0 || real >= info.frame_count {
                            return Err(short);
                        }
                        let mut counted = info.clone();
                        counted.frame_count = real;
                        let plan = plan_frames(timing(&counted), item.sampling, item.start_seed);
                        problems.push(Problem {
                            path: item.path.clone(),
                            kind: ProblemKind::FrameCountMismatch,
                            message: format!(
                                "header says {} frames, {real} can be decoded (truncated?); frames chosen from those",
                                info.frame_count
                            ),
                        });
                        let frames =
                            decode_video_frames(&item.path, &counted, &plan.indices, size)?;
                        (frames, plan.indices)
                    }
                    Err(other) => return Err(other),
                }
            }
        };
        if item.flip.x {
            frames.flip_x();
        }
        if item.flip.y {
            frames.flip_y();
        }
        Ok(LoadedFrames {
            frames,
            frame_indices: indices,
            problems,
        })
    }
}

/// The sampling mode of a dataset for a file kind. A video in a dataset with `num_frames: 1`
/// gives its first frame.
fn sampling_mode(spec: &DatasetSpec, kind: MediaKind) -> SamplingMode {
    if kind == MediaKind::Image {
        SamplingMode::Spread { num_frames: 1 }
    } else if spec.auto_frame_count {
        SamplingMode::AutoCount {
            fps: spec.fps,
            trim_tail: spec.trim_auto_frame_count_tail,
        }
    } else if spec.shrink_video_to_frames || spec.num_frames == 1 {
        SamplingMode::Spread {
            num_frames: spec.num_frames,
        }
    } else {
        SamplingMode::RealTime {
            num_frames: spec.num_frames,
            fps: spec.fps,
        }
    }
}

fn timing(info: &MediaInfo) -> ClipTiming {
    ClipTiming {
        frame_count: info.frame_count,
        fps: info.fps.as_f64(),
        duration_s: info.duration_s,
    }
}

/// Probes files on a few threads: each probe is an ffprobe process that mostly waits on I/O.
fn probe_all(files: &[(PathBuf, MediaKind)]) -> Vec<(PathBuf, Result<SourceFacts, MediaError>)> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((path, kind)) = files.get(i) else {
                    break;
                };
                let facts = match kind {
                    MediaKind::Video => probe(path).map(SourceFacts::Video),
                    MediaKind::Image => probe_image(path).map(SourceFacts::Image),
                };
                if let Ok(mut results) = results.lock() {
                    results.push((path.clone(), facts));
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}

/// The problem record for a file that could not be probed or decoded.
pub fn problem_from_media_error(path: &Path, err: &MediaError) -> Problem {
    let kind = match err {
        MediaError::ZeroLength { .. } => ProblemKind::ZeroLength,
        MediaError::NoVideoStream { .. } => ProblemKind::NoVideoStream,
        MediaError::ShortDecode { .. } | MediaError::Ffmpeg { .. } => ProblemKind::DecodeFailed,
        MediaError::TooLarge { .. } => ProblemKind::TooLarge,
        _ => ProblemKind::Unreadable,
    };
    let full = err.to_string();
    let prefix = format!("{}: ", path.display());
    let message = full.strip_prefix(&prefix).unwrap_or(&full).to_string();
    Problem {
        path: path.to_path_buf(),
        kind,
        message,
    }
}

fn caption_problems(
    path: &Path,
    raw: &crate::caption::RawCaption,
    own_caption: &Path,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if raw.empty.iter().any(|p| p == own_caption) {
        let used = match &raw.source {
            CaptionSource::Missing => {
                "trained with an empty caption (plus the trigger word, if any)".to_string()
            }
            CaptionSource::FolderDefault(default) => {
                format!("{} was used instead", shown_path(default))
            }
            CaptionSource::DefaultCaption => "default_caption was used instead".to_string(),
            CaptionSource::OwnFile(_) => String::new(),
        };
        out.push(Problem {
            path: own_caption.to_path_buf(),
            kind: ProblemKind::EmptyCaption,
            message: format!("the caption file is empty or holds only whitespace; {used}"),
        });
    } else if raw.source == CaptionSource::Missing {
        out.push(Problem {
            path: path.to_path_buf(),
            kind: ProblemKind::MissingCaption,
            message: "no caption file, no default.txt and no default_caption: trained with an empty caption (plus the trigger word, if any)".into(),
        });
    }
    for file in &raw.non_utf8 {
        out.push(Problem {
            path: file.clone(),
            kind: ProblemKind::NonUtf8Caption,
            message: "caption is not valid UTF-8; invalid bytes were replaced by U+FFFD — re-save it as UTF-8".into(),
        });
    }
    for (file, reason) in &raw.unreadable {
        out.push(Problem {
            path: file.clone(),
            kind: ProblemKind::UnreadableCaption,
            message: format!(
                "caption file cannot be read ({reason}); the default caption was used"
            ),
        });
    }
    out
}

fn source_problems(path: &Path, facts: &SourceFacts) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |kind: ProblemKind, message: &str| {
        out.push(Problem {
            path: path.to_path_buf(),
            kind,
            message: message.to_string(),
        })
    };
    match facts {
        SourceFacts::Image(info) => {
            if info.notes.alpha {
                push(
                    ProblemKind::Alpha,
                    "image has an alpha channel; transparent parts are composited onto white",
                );
            }
            if info.notes.cmyk {
                push(ProblemKind::Cmyk, "CMYK JPEG; converted to RGB");
            }
            if info.notes.high_bit_depth {
                push(
                    ProblemKind::HighBitDepth,
                    "more than 8 bits per channel; reduced to 8",
                );
            }
        }
        SourceFacts::Video(info) => {
            if let Some(cut) = &info.truncation {
                push(
                    ProblemKind::Truncated,
                    &format!(
                        "truncated: the header lists {} frames, the file holds {} ({}); frames are chosen from those — re-export or re-download it to train on the whole clip",
                        cut.header_frames, info.frame_count, cut.read_error
                    ),
                );
            }
            if info.has_alpha {
                push(
                    ProblemKind::Alpha,
                    &format!(
                        "video has an alpha channel ({}); it is dropped when decoding to RGB",
                        info.pix_fmt
                    ),
                );
            }
        }
    }
    out
}
