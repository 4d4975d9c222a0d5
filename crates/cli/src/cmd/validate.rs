//! `wanlora validate JOB.yaml [--json]`: the job as it will run (YAML on stdout), or every problem in it.
//!
//! Findings go to stderr as `file:line:column: severity: key: message` with a hint, so the resolved
//! YAML on stdout can be redirected to a file. `--json` prints one report object on stdout instead,
//! which the web UI uses to show each finding at its field. Exit code 1 when there is any error.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use wanlora_config::{parse_job, resolve_paths, to_yaml, Finding, SourceInfo, Validated};

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The job file: AI Toolkit's YAML or JSON job format.
    pub job: PathBuf,
    /// Print a JSON report (valid, error and warning counts, findings, resolved job) instead.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(serde::Serialize)]
pub struct Report<'a> {
    pub source: &'a str,
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    pub findings: &'a [Finding],
    /// The job with dataset folders and start frames made absolute; null when the file is unreadable.
    pub job: Option<wanlora_config::Job>,
}

/// The report of a validated job text from `source`.
pub fn report<'a>(source: &'a SourceInfo, validated: &'a Validated) -> Report<'a> {
    let job = validated.job.clone().map(|mut job| {
        resolve_paths(&mut job, &source.base_dir);
        job
    });
    Report {
        source: &source.name,
        valid: validated.is_valid(),
        errors: validated.errors().count(),
        warnings: validated.warnings().count(),
        findings: &validated.findings,
        job,
    }
}

pub fn run(args: ValidateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read the job file {}", args.job.display()))?;
    let source = SourceInfo::for_file(&args.job);
    let mut validated = parse_job(&text, &source);
    // `cuda:N` against the GPUs this machine has (the config crate does not look at the machine).
    let gpus = wanlora_config::visible_gpu_count(
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        wanlora_sysinfo::gpus().ok().map(|g| g.len()),
    );
    if let (Some(job), Some(count)) = (validated.job.as_ref(), gpus) {
        validated
            .findings
            .extend(wanlora_config::device_count_finding(job, count));
    }
    let report = report(&source, &validated);
    if args.json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        for finding in report.findings {
            eprintln!("{}", finding.display_in(&source.name));
        }
        if let (true, Some(job)) = (report.valid, report.job.as_ref()) {
            write_stdout(&to_yaml(job))?;
        }
    }
    if !report.valid {
        let n = report.errors;
        bail!(
            "{} has {n} error{}; nothing was run",
            args.job.display(),
            if n == 1 { "" } else { "s" }
        );
    }
    if !args.json {
        let w = report.warnings;
        eprintln!(
            "{}: valid ({w} warning{})",
            args.job.display(),
            if w == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Writes to stdout; a reader that stops early (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name)
    }

    #[test]
    fn report_of_an_example_is_valid_with_absolute_paths() {
        let path = example("motion_24gb.yaml");
        let text = std::fs::read_to_string(&path).expect("example");
        let source = SourceInfo::for_file(&path);
        let validated = parse_job(&text, &source);
        let report = report(&source, &validated);
        assert!(report.valid && report.errors == 0);
        let job = report.job.expect("job");
        assert!(Path::new(&job.process().datasets[0].folder_path).is_absolute());
        let json = serde_json::to_value(super::report(&source, &validated)).expect("json");
        assert_eq!(json["valid"], true);
        assert_eq!(json["job"]["config"]["name"], "motion_orbit_24gb_v1");
    }

    #[test]
    fn report_of_a_broken_job_lists_its_errors() {
        let path = example("motion_24gb.yaml");
        let text = std::fs::read_to_string(&path)
            .expect("example")
            .replace("num_frames: 41", "num_frames: 40");
        let source = SourceInfo::for_file(&path);
        let validated = parse_job(&text, &source);
        let json = serde_json::to_value(report(&source, &validated)).expect("json");
        assert_eq!(json["valid"], false);
        assert_eq!(json["errors"], 2, "dataset and sample num_frames: {json:#}");
        let keys: Vec<&str> = json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter_map(|f| f["key"].as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "config.process[0].datasets[0].num_frames",
                "config.process[0].sample.num_frames"
            ]
        );
    }
}
