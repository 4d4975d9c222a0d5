//! The text `wanlora models` prints: per component where it comes from, its size and format, and
//! what is missing with how to get it.

use std::fmt::Write;

use crate::checks::ComponentCheck;
use crate::error::human_bytes;
use crate::resolve::{ResolvedComponent, ResolvedModel, State};
use crate::spec::Stage;
use crate::tree::Layout;

fn layout_text(rc: &ResolvedComponent) -> String {
    match rc.layout {
        Some(Layout::SingleFile) => "single file".into(),
        Some(Layout::Sharded { shards }) => format!("{shards} shards"),
        Some(Layout::TokenizerFiles) => match rc.files.len() {
            1 => "1 tokenizer file".into(),
            n => format!("{n} tokenizer files"),
        },
        None => "-".into(),
    }
}

fn state_text(rc: &ResolvedComponent) -> String {
    match &rc.state {
        State::Ready => "ready".into(),
        State::Download { bytes, files } => {
            format!("to download: {files} files, {}", human_bytes(*bytes))
        }
        State::Missing { .. } => "MISSING".into(),
        State::NotNeeded => "not needed".into(),
    }
}

/// Renders the resolution of a job's model plus the header checks of its ready components.
pub fn render(model: &ResolvedModel, checks: &[ComponentCheck]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Hugging Face cache: {} (endpoint {}, {})\n",
        model.cache_dir.display(),
        model.endpoint,
        if model.offline {
            "offline: HF_HUB_OFFLINE is set"
        } else {
            "online"
        }
    );
    for rc in &model.components {
        let _ = writeln!(out, "{} — {} — {}", rc.component, rc.need, state_text(rc));
        let _ = writeln!(out, "  from:   {}", rc.source_label());
        if rc.state == State::NotNeeded {
            out.push('\n');
            continue;
        }
        if let Some(origin) = &rc.origin {
            let _ = writeln!(out, "  where:  {origin}");
        }
        if rc.layout.is_some() {
            let mut format = format!("{}, {}", layout_text(rc), human_bytes(rc.total_bytes()));
            match checks
                .iter()
                .find(|(c, _)| *c == rc.component)
                .map(|(_, r)| r)
            {
                Some(Ok(report)) => {
                    if let Some(d) = &report.dtypes {
                        let _ = write!(format, ", {d}");
                    }
                    let _ = write!(format, "; {}", report.kind);
                }
                Some(Err(_)) | None if rc.is_ready() => {}
                _ => format.push_str("; storage type known once downloaded"),
            }
            let _ = writeln!(out, "  format: {format}");
        }
        if let Some((_, result)) = checks.iter().find(|(c, _)| *c == rc.component) {
            match result {
                Ok(report) => {
                    for w in &report.warnings {
                        let _ = writeln!(out, "  warning: {w}");
                    }
                }
                Err(failure) => {
                    match &failure.file {
                        Some(file) => {
                            let _ =
                                writeln!(out, "  WRONG:  {} {}", file.display(), failure.reason);
                        }
                        None => {
                            let _ = writeln!(out, "  WRONG:  {}", failure.reason);
                        }
                    }
                    if !failure.fix.is_empty() {
                        let _ = writeln!(out, "  fix:    {}", failure.fix);
                    }
                }
            }
        }
        if let State::Missing { files, reason, fix } = &rc.state {
            let _ = writeln!(out, "  why:    {reason}");
            for f in files {
                let _ = writeln!(out, "    - {f}");
            }
            if !fix.is_empty() {
                let _ = writeln!(out, "  fix:    {fix}");
            }
        }
        out.push('\n');
    }
    let training = model.download_bytes(Stage::Training);
    let samples = model.download_bytes(Stage::Samples);
    let missing = model
        .components
        .iter()
        .filter(|c| matches!(c.state, State::Missing { .. }))
        .count();
    let wrong = checks.iter().filter(|(_, r)| r.is_err()).count();
    if training + samples > 0 {
        let _ = writeln!(
            out,
            "To download: {} before training{}. Run `wanlora models fetch JOB.yaml` to get it ahead of time.",
            human_bytes(training),
            if samples > 0 {
                format!(", {} more when samples first run", human_bytes(samples))
            } else {
                String::new()
            }
        );
    }
    if missing > 0 || wrong > 0 {
        let _ = writeln!(
            out,
            "Not ready: {missing} missing, {wrong} wrong; see above."
        );
    } else if training + samples == 0 {
        let _ = writeln!(out, "Everything the job loads is on disk.");
    }
    out
}
