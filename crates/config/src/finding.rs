//! What validation reports: one problem (or caution) at one key.

use crate::node::Pos;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The job cannot run as written.
    Error,
    /// The job runs, but something in it does not do what it may seem to.
    Warning,
    /// Worth knowing, nothing to fix: e.g. a value AI Toolkit's UI writes into every job that has
    /// no effect on Wan.
    Note,
}

/// One problem found in a job file, at the key it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// The key as written in the file, e.g. `config.process[0].datasets[1].num_frames`.
    pub key: String,
    /// 1-based line of the key or value, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Finding {
    pub(crate) fn new(
        severity: Severity,
        key: impl Into<String>,
        pos: Option<Pos>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            key: key.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn error(
        key: impl Into<String>,
        pos: Option<Pos>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Error, key, pos, message, hint)
    }

    pub(crate) fn warning(
        key: impl Into<String>,
        pos: Option<Pos>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Warning, key, pos, message, hint)
    }

    pub(crate) fn note(
        key: impl Into<String>,
        pos: Option<Pos>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Note, key, pos, message, hint)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column: error: key: message` plus an indented hint, the way compilers report.
    pub fn display_in<'a>(&'a self, source: &'a str) -> impl fmt::Display + 'a {
        DisplayIn {
            finding: self,
            source,
        }
    }
}

struct DisplayIn<'a> {
    finding: &'a Finding,
    source: &'a str,
}

impl fmt::Display for DisplayIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fi = self.finding;
        write!(f, "{}", self.source)?;
        if let Some(line) = fi.line {
            write!(f, ":{line}")?;
            if let Some(column) = fi.column {
                write!(f, ":{column}")?;
            }
        }
        let severity = match fi.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, ": {severity}: {}: {}", fi.key, fi.message)?;
        if !fi.hint.is_empty() {
            write!(f, "\n    hint: {}", fi.hint)?;
        }
        Ok(())
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display_in("job"))
    }
}

/// Orders findings by where they are in the file (those without a position last), errors first on a tie.
pub(crate) fn sort_by_position(findings: &mut [Finding]) {
    findings.sort_by_key(|f| (f.line.is_none(), f.line, f.column, f.severity));
}
