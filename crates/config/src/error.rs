//! Errors of [`crate::load_job`].

use crate::finding::Finding;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The job file could not be read.
    #[error("cannot read the job file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The job file has errors; `findings` holds all of them (and the warnings).
    #[error("{}", describe_invalid(path, findings))]
    Invalid {
        path: PathBuf,
        findings: Vec<Finding>,
    },
}

fn describe_invalid(path: &std::path::Path, findings: &[Finding]) -> String {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.is_error()).collect();
    let mut text = format!(
        "{} has {} error{} (run `wanlora validate {}` for the full report):",
        path.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        path.display()
    );
    let source = path.display().to_string();
    for finding in errors {
        let _ = write!(text, "\n{}", finding.display_in(&source));
    }
    text
}
