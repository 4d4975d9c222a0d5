//! What the job asks of one dataset, as plain values. The config crate's YAML structs are mapped
//! onto these by the caller, so this crate does not depend on the job format.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One entry of the job's `datasets:` list (AI Toolkit's `DatasetConfig`, the keys that matter for
/// Wan 2.2 I2V). Defaults are AI Toolkit's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// The folder of clips, images and captions (`folder_path`).
    pub folder_path: PathBuf,
    /// Caption file extension, with or without the dot (`caption_ext`, default `txt`).
    pub caption_ext: String,
    /// Caption for files without a caption file, an empty one, or a `default.txt` (`default_caption`).
    pub default_caption: Option<String>,
    /// This dataset's trigger word; when `None` the job's trigger word applies (`trigger_word`).
    pub trigger_word: Option<String>,
    /// Probability that an item's caption is replaced by the empty caption (`caption_dropout_rate`).
    pub caption_dropout_rate: f64,
    /// Target resolutions; one dataset per entry (`resolution`, int or list).
    pub resolutions: Vec<u32>,
    /// Frames per video item (`num_frames`); images are always one frame.
    pub num_frames: usize,
    /// true: `num_frames` spread over the whole clip; false: consecutive frames at `fps`
    /// (`shrink_video_to_frames`).
    pub shrink_video_to_frames: bool,
    /// Frame rate of the training clips when frames are taken in real time (`fps`).
    pub fps: f64,
    /// Frame count from each clip's duration × `fps`, snapped down to 4n+1 (`auto_frame_count`).
    pub auto_frame_count: bool,
    /// With `auto_frame_count`: drop the tail that does not fit 4n+1 and keep real time (true), or
    /// stretch the whole clip over ⌊frames/4⌋·4 + 1 frames (`trim_auto_frame_count_tail`).
    pub trim_auto_frame_count_tail: bool,
    /// Add a horizontally mirrored copy of every item (`flip_x`).
    pub flip_x: bool,
    /// Add a vertically mirrored copy of every item (`flip_y`).
    pub flip_y: bool,
    /// Regularisation set: the trigger word is not prepended (`is_reg`).
    pub is_reg: bool,
    /// LoRA multiplier for this dataset's items (`network_weight`).
    pub network_weight: f64,
    /// Loss weight for this dataset's items (`loss_multiplier`).
    pub loss_multiplier: f64,
    /// How many times each item appears per epoch (`num_repeats`).
    pub num_repeats: usize,
    /// Keep VAE latents on disk (`cache_latents` / `cache_latents_to_disk`).
    pub cache_latents: bool,
    /// Per-dataset batch size; `None` takes the job's (`batch_size`).
    pub batch_size: Option<usize>,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        Self {
            folder_path: PathBuf::new(),
            caption_ext: "txt".into(),
            default_caption: None,
            trigger_word: None,
            caption_dropout_rate: 0.0,
            resolutions: vec![512],
            num_frames: 1,
            shrink_video_to_frames: true,
            fps: 24.0,
            auto_frame_count: false,
            trim_auto_frame_count_tail: true,
            flip_x: false,
            flip_y: false,
            is_reg: false,
            network_weight: 1.0,
            loss_multiplier: 1.0,
            num_repeats: 1,
            cache_latents: false,
            batch_size: None,
        }
    }
}

/// Job-level facts the datasets need.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobContext {
    /// The job's `config.name`.
    pub name: String,
    /// The process-level `trigger_word`, used by datasets without their own.
    pub trigger_word: Option<String>,
    /// Seed of all data randomness: clip start frames, data order, caption dropout.
    pub seed: u64,
    /// The job's `train.batch_size`, used by datasets without their own.
    pub batch_size: usize,
    /// Differential output preservation class word (`train.diff_output_preservation_class`) when
    /// DOP is on: each caption gets a variant with the trigger replaced by this word.
    pub preservation_class: Option<String>,
    /// Keep text embeddings on disk (`train.cache_text_embeddings`).
    pub cache_text_embeddings: bool,
    /// Bucket sides are multiples of this (the model's pixels per token side: 32 for TI2V-5B's 16× VAE);
    /// `None`: [`crate::bucket::BUCKET_STEP`], the A14B models' 16.
    #[serde(default)]
    pub bucket_step: Option<u32>,
}

/// A setting that cannot be used, with the job key that holds it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{key}: {message}")]
pub struct SpecError {
    /// The job key, e.g. `datasets[1].num_frames`.
    pub key: String,
    pub message: String,
}

impl DatasetSpec {
    /// The caption extension with its dot (`txt` and `.txt` both give `.txt`).
    pub fn caption_extension(&self) -> String {
        let ext = self.caption_ext.trim();
        if ext.starts_with('.') {
            ext.to_string()
        } else {
            format!(".{ext}")
        }
    }

    /// Checks every value; `index` is the dataset's place in the job's `datasets:` list.
    pub fn validate(&self, index: usize) -> Result<(), SpecError> {
        let err = |field: &str, message: String| SpecError {
            key: format!("datasets[{index}].{field}"),
            message,
        };
        if self.folder_path.as_os_str().is_empty() {
            return Err(err(
                "folder_path",
                "is empty; set it to the folder that holds your clips and captions".into(),
            ));
        }
        if self.caption_ext.trim().trim_start_matches('.').is_empty() {
            return Err(err("caption_ext", "is empty; use e.g. `txt`".into()));
        }
        if !(0.0..=1.0).contains(&self.caption_dropout_rate) {
            return Err(err(
                "caption_dropout_rate",
                format!("is {}; it must lie in [0, 1]", self.caption_dropout_rate),
            ));
        }
        if self.resolutions.is_empty() {
            return Err(err(
                "resolution",
                "is an empty list; give at least one, e.g. 512".into(),
            ));
        }
        if let Some(&bad) = self.resolutions.iter().find(|&&r| r < 16) {
            return Err(err(
                "resolution",
                format!("{bad} is too small; buckets are multiples of 16 pixels"),
            ));
        }
        if self.num_frames == 0 {
            return Err(err(
                "num_frames",
                "is 0; use 1 for images or 4n+1 (e.g. 41, 81) for video".into(),
            ));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(err(
                "fps",
                format!("is {}; it must be a positive number, e.g. 16", self.fps),
            ));
        }
        for (field, value) in [
            ("network_weight", self.network_weight),
            ("loss_multiplier", self.loss_multiplier),
        ] {
            if !value.is_finite() {
                return Err(err(
                    field,
                    format!("is {value}; it must be a finite number"),
                ));
            }
        }
        if self.num_repeats == 0 {
            return Err(err(
                "num_repeats",
                "is 0; use 1 or more (0 would drop the dataset)".into(),
            ));
        }
        if self.batch_size == Some(0) {
            return Err(err("batch_size", "is 0; use 1 or more".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DatasetSpec {
        DatasetSpec {
            folder_path: "/data/clips".into(),
            ..DatasetSpec::default()
        }
    }

    #[test]
    fn caption_extension_gets_its_dot() {
        let mut s = spec();
        assert_eq!(s.caption_extension(), ".txt");
        s.caption_ext = ".caption".into();
        assert_eq!(s.caption_extension(), ".caption");
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = spec();
        assert!(s.validate(0).is_ok());
        s.caption_dropout_rate = 1.5;
        assert_eq!(
            s.validate(2).unwrap_err().key,
            "datasets[2].caption_dropout_rate"
        );
        let mut s = spec();
        s.resolutions = vec![512, 8];
        assert_eq!(s.validate(0).unwrap_err().key, "datasets[0].resolution");
        let mut s = spec();
        s.num_frames = 0;
        assert_eq!(s.validate(1).unwrap_err().key, "datasets[1].num_frames");
        let mut s = spec();
        s.fps = 0.0;
        assert_eq!(s.validate(0).unwrap_err().key, "datasets[0].fps");
        let mut s = spec();
        s.folder_path = PathBuf::new();
        assert_eq!(s.validate(0).unwrap_err().key, "datasets[0].folder_path");
    }
}
