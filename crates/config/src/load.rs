//! From text or a file to a checked [`Job`]: substitutions, parsing, typed reading, validation.

use crate::env::{substitute_env, substitute_name};
use crate::error::ConfigError;
use crate::finding::{sort_by_position, Finding};
use crate::job::{read_job, Job};
use crate::node::{parse_json, parse_yaml};
use crate::reader::Ctx;
use crate::validate::validate;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The syntax of a job text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `.json` / `.jsonc` are JSON; everything else is read as YAML (which JSON is a subset of).
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json" | "jsonc") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Where a job text comes from: a name for messages, its syntax, and the folder that relative paths
/// (`folder_path`, `ctrl_img`) are resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub name: String,
    pub format: Format,
    pub base_dir: PathBuf,
}

impl SourceInfo {
    /// The source info of a job file: its path, format by extension, and its folder.
    pub fn for_file(path: &Path) -> SourceInfo {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        SourceInfo {
            name: path.display().to_string(),
            format: Format::from_path(path),
            base_dir: absolute.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }
}

/// The outcome of checking a job text: the job (None only when the text is not a readable
/// YAML/JSON mapping) and every finding, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub job: Option<Job>,
    pub findings: Vec<Finding>,
}

impl Validated {
    /// True when there are no errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.job.is_some() && !self.findings.iter().any(Finding::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == crate::Severity::Warning)
    }

    pub fn notes(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == crate::Severity::Note)
    }
}

/// A job file that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedJob {
    /// The job, with `datasets[].folder_path` and `samples[].ctrl_img` made absolute (resolved
    /// against the job file's folder).
    pub job: Job,
    pub path: PathBuf,
    /// The job file's folder.
    pub base_dir: PathBuf,
    pub warnings: Vec<Finding>,
}

impl LoadedJob {
    /// A path from the job, resolved against the job file's folder when relative.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }
}

/// Reads, parses and validates a job file. Errors carry every finding.
pub fn load_job(path: &Path) -> Result<LoadedJob, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let source = SourceInfo::for_file(path);
    let validated = parse_job(&text, &source);
    match validated.job {
        Some(mut job) if !validated.findings.iter().any(Finding::is_error) => {
            resolve_paths(&mut job, &source.base_dir);
            Ok(LoadedJob {
                job,
                path: path.to_path_buf(),
                base_dir: source.base_dir,
                warnings: validated.findings,
            })
        }
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            findings: validated.findings,
        }),
    }
}

/// Makes the dataset folders and start frames absolute, so later stages need no base folder.
pub fn resolve_paths(job: &mut Job, base_dir: &Path) {
    let absolute = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = base_dir.join(p.as_str()).display().to_string();
        }
    };
    let process = job.process_mut();
    for dataset in &mut process.datasets {
        absolute(&mut dataset.folder_path);
    }
    for item in &mut process.train.validation_config.validation_items {
        absolute(&mut item.image_path);
    }
    for item in &mut process.sample.samples {
        if let Some(image) = item.ctrl_img.as_mut() {
            absolute(image);
        }
    }
}

/// Parses and validates a job text, reading `${VAR}` from the process environment.
pub fn parse_job(text: &str, source: &SourceInfo) -> Validated {
    parse_job_with_env(text, source, &|name| std::env::var(name).ok())
}

/// [`parse_job`] with an explicit environment lookup for `${VAR}`.
pub fn parse_job_with_env(
    text: &str,
    source: &SourceInfo,
    env: &dyn Fn(&str) -> Option<String>,
) -> Validated {
    let (text, mut findings) = substitute_env(text, env);
    let parsed = match source.format {
        Format::Yaml => parse_yaml(&text),
        Format::Json => parse_json(&text),
    };
    let mut root = match parsed {
        Ok(root) => root,
        Err(err) => {
            let what = match source.format {
                Format::Yaml => "YAML",
                Format::Json => "JSON",
            };
            findings.push(Finding::error(
                "(file)",
                err.pos,
                format!("not valid {what}: {}", err.message),
                "fix the syntax at this position",
            ));
            return Validated {
                job: None,
                findings,
            };
        }
    };
    if root.entries().is_none() {
        let message = if root.is_null() {
            "the file is empty".to_string()
        } else {
            format!("the file holds {}, not a job mapping", root.kind())
        };
        findings.push(Finding::error(
            "(file)",
            root.pos,
            message,
            "start from one of the files in examples/",
        ));
        return Validated {
            job: None,
            findings,
        };
    }
    substitute_name(&mut root);
    let mut ctx = Ctx::reading();
    let job = read_job(&root, &mut ctx);
    validate(&job, &mut ctx, &source.base_dir);
    findings.extend(ctx.findings);
    sort_by_position(&mut findings);
    Validated {
        job: Some(job),
        findings,
    }
}
