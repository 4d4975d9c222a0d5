//! The example jobs of `examples/`: motion, style and character for Wan 2.2 I2V A14B (each for a
//! 24 GB card and for an H100), and the same three recipes for T2V A14B on a 24 GB card (`t2v_*`),
//! embedded so the UI and `wanlora demo` need no files on disk.
//!
//! Their relative paths (`data/...`) refer to the repository's `examples/` folder.

use crate::job::Job;
use crate::load::{parse_job, Format, SourceInfo};
use serde::Serialize;
use std::path::PathBuf;

/// What a recipe teaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// A motion or camera move; favours the high-noise expert.
    Motion,
    /// A look; favours the low-noise expert.
    Style,
    /// A person or character, with DOP on its class word.
    Character,
}

/// The card a preset is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Card {
    /// 24 GB (RTX 3090/4090): fp8 weights, idle expert in host memory.
    Gpu24Gb,
    /// 80 GB H100: bf16 weights.
    H100,
}

/// One example job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Preset {
    /// File stem in `examples/`, e.g. `motion_24gb`.
    pub id: &'static str,
    pub recipe: Recipe,
    pub card: Card,
    pub title: &'static str,
    /// The YAML text of `examples/<id>.yaml`.
    pub yaml: &'static str,
}

const PRESETS: [Preset; 9] = [
    Preset {
        id: "motion_24gb",
        recipe: Recipe::Motion,
        card: Card::Gpu24Gb,
        title: "Motion / camera move, 24 GB card",
        yaml: include_str!("../../../examples/motion_24gb.yaml"),
    },
    Preset {
        id: "motion_h100",
        recipe: Recipe::Motion,
        card: Card::H100,
        title: "Motion / camera move, H100",
        yaml: include_str!("../../../examples/motion_h100.yaml"),
    },
    Preset {
        id: "style_24gb",
        recipe: Recipe::Style,
        card: Card::Gpu24Gb,
        title: "Style, 24 GB card",
        yaml: include_str!("../../../examples/style_24gb.yaml"),
    },
    Preset {
        id: "style_h100",
        recipe: Recipe::Style,
        card: Card::H100,
        title: "Style, H100",
        yaml: include_str!("../../../examples/style_h100.yaml"),
    },
    Preset {
        id: "character_24gb",
        recipe: Recipe::Character,
        card: Card::Gpu24Gb,
        title: "Character with DOP, 24 GB card",
        yaml: include_str!("../../../examples/character_24gb.yaml"),
    },
    Preset {
        id: "character_h100",
        recipe: Recipe::Character,
        card: Card::H100,
        title: "Character with DOP, H100",
        yaml: include_str!("../../../examples/character_h100.yaml"),
    },
    Preset {
        id: "t2v_motion_24gb",
        recipe: Recipe::Motion,
        card: Card::Gpu24Gb,
        title: "Text-to-video: motion / camera move, 24 GB card",
        yaml: include_str!("../../../examples/t2v_motion_24gb.yaml"),
    },
    Preset {
        id: "t2v_style_24gb",
        recipe: Recipe::Style,
        card: Card::Gpu24Gb,
        title: "Text-to-video: style, 24 GB card",
        yaml: include_str!("../../../examples/t2v_style_24gb.yaml"),
    },
    Preset {
        id: "t2v_character_24gb",
        recipe: Recipe::Character,
        card: Card::Gpu24Gb,
        title: "Text-to-video: character with DOP, 24 GB card",
        yaml: include_str!("../../../examples/t2v_character_24gb.yaml"),
    },
];

/// All presets: the six I2V ones, then the three T2V ones.
pub fn all() -> &'static [Preset] {
    &PRESETS
}

/// The preset with this id (`motion_24gb`, …).
pub fn find(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

impl Preset {
    /// The preset as a typed job (paths as written, relative to `examples/`).
    pub fn job(&self) -> Job {
        let source = SourceInfo {
            name: format!("examples/{}.yaml", self.id),
            format: Format::Yaml,
            base_dir: PathBuf::from("examples"),
        };
        parse_job(self.yaml, &source)
            .job
            .expect("embedded presets are valid YAML mappings (tests/examples.rs checks every one)")
    }
}
