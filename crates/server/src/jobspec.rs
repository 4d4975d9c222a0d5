//! A job as the UI handles it: the AI Toolkit YAML held as a JSON tree (so keys the form does not
//! know survive the round trip), checked for what the UI must enforce (names, and every folder
//! the trainer will read or write confined to the data folder), then handed to the config
//! crate's validator for everything else.
//!
//! Findings name a field by its dotted path in the tree (`config.process.0.train.lr`), which is
//! also how the form's inputs are keyed, so a finding lands next to its field.

use crate::paths::{self, DataDirs};
pub use crate::tree::Tree;
use serde::Serialize;
use std::path::Path;

/// The config crate's severities (error, warning, note), shown by the form as they are.
pub use wanlora_config::Severity;

/// One problem with a job, tied to a field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Dotted path in the job tree; empty for the document as a whole.
    pub path: String,
    pub severity: Severity,
    pub message: String,
    /// What to do about it (may be empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hint: String,
    /// 1-based position in the YAML text, when known.
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl Finding {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            path: path.into(),
            severity: Severity::Error,
            message: message.into(),
            hint: String::new(),
            line: None,
            column: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(path, message)
        }
    }
}

/// True when any finding is an error (the job cannot be saved).
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Parses YAML (or JSON) into the job tree; a syntax error is a finding with its position.
pub fn parse_yaml(text: &str) -> Result<Tree, Finding> {
    let tree: Tree = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = match e.location() {
            Some(at) => (Some(at.line()), Some(at.column())),
            None => position_in(&e.to_string()),
        };
        // The same wording as `wanlora validate` (no parser function names).
        let message = wanlora_config::yaml_error_message(&e);
        Finding {
            line,
            column,
            ..Finding::error("", format!("the YAML does not parse: {message}"))
        }
    })?;
    if !tree.is_map() {
        return Err(Finding::error(
            "",
            "a job file is a mapping with `job:` and `config:` at its top",
        ));
    }
    Ok(tree)
}

/// Pulls "line N" / "column M" out of a parser message.
fn position_in(message: &str) -> (Option<u64>, Option<u64>) {
    let number_after = |word: &str| {
        let at = message.find(word)? + word.len();
        let digits: String = message[at..]
            .trim_start_matches([' ', ':'])
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    (number_after("line"), number_after("column"))
}

/// Renders the tree as YAML.
pub fn to_yaml(tree: &Tree) -> Result<String, Finding> {
    serde_saphyr::to_string(tree)
        .map_err(|e| Finding::error("", format!("the job cannot be written as YAML: {e}")))
}

/// The first (and for Wan LoRA jobs, only) training process of the job.
pub fn process(tree: &Tree) -> Option<&Tree> {
    tree.pointer("/config/process/0")
}

/// `config.name`.
pub fn job_name(tree: &Tree) -> Option<&str> {
    tree.pointer("/config/name").and_then(Tree::as_str)
}

/// `train.steps`, or 0 when absent.
pub fn total_steps(tree: &Tree) -> i64 {
    process(tree)
        .and_then(|p| p.pointer("/train/steps"))
        .and_then(Tree::as_i64)
        .unwrap_or(0)
}

/// Sets what the UI decides for every job: its output goes to the data folder's output/.
pub fn confine(tree: &mut Tree, dirs: &DataDirs) {
    if let Some(p) = tree.pointer_mut("/config/process/0") {
        p.insert(
            "training_folder",
            Tree::Str(dirs.output.display().to_string()),
        );
    }
}

/// The checks the UI itself owns: a usable name and folders inside the data folder.
pub fn check(tree: &Tree, dirs: &DataDirs) -> Vec<Finding> {
    let mut out = Vec::new();
    match tree.get("job").and_then(Tree::as_str) {
        Some("extension") => {}
        _ => out.push(Finding::error(
            "job",
            "set `job: extension` (the only job kind that trains)",
        )),
    }
    match job_name(tree) {
        None => out.push(Finding::error(
            "config.name",
            "give the job a name; it names the output folder and the LoRA files",
        )),
        Some(name) => {
            if let Err(e) = paths::checked_name("job name", name) {
                out.push(Finding::error("config.name", e.to_string()));
            }
        }
    }
    let Some(process) = process(tree) else {
        out.push(Finding::error(
            "config.process",
            "`config.process` must be a list with one trainer entry",
        ));
        return out;
    };
    match process.pointer("/train/steps").and_then(Tree::as_i64) {
        Some(n) if n > 0 => {}
        _ => out.push(Finding::error(
            "config.process.0.train.steps",
            "steps must be a whole number above 0",
        )),
    }
    let datasets = process.get("datasets").map(Tree::as_list).unwrap_or(&[]);
    if datasets.is_empty() {
        out.push(Finding::error(
            "config.process.0.datasets",
            "add a dataset: upload clips on the Datasets page, then pick it here",
        ));
    }
    for (i, ds) in datasets.iter().enumerate() {
        let key = format!("config.process.0.datasets.{i}.folder_path");
        match ds.get("folder_path").and_then(Tree::as_str) {
            None | Some("") => out.push(Finding::error(key, "pick a dataset")),
            Some(folder) => {
                if !paths::is_inside(&dirs.datasets, Path::new(folder)) {
                    out.push(Finding::error(
                        key,
                        format!(
                            "{folder} is not a dataset of this UI (under {}); upload the clips on \
                             the Datasets page and pick that dataset",
                            dirs.datasets.display()
                        ),
                    ));
                }
            }
        }
    }
    let samples = process
        .pointer("/sample/samples")
        .map(Tree::as_list)
        .unwrap_or(&[]);
    for (i, item) in samples.iter().enumerate() {
        let key = format!("config.process.0.sample.samples.{i}.ctrl_img");
        if let Some(img) = item.get("ctrl_img").and_then(Tree::as_str) {
            let p = Path::new(img);
            if !img.is_empty()
                && !paths::is_inside(&dirs.uploads, p)
                && !paths::is_inside(&dirs.datasets, p)
            {
                out.push(Finding::error(
                    key,
                    format!("{img} is not an uploaded image; upload the start frame with the prompt's image button"),
                ));
            }
        }
    }
    out
}

/// `config.process[0].datasets[1].num_frames` (the validator's key) → the form's dotted path
/// `config.process.0.datasets.1.num_frames`; `(file)` (the document) → "".
pub fn form_path(key: &str) -> String {
    if key == "(file)" {
        return String::new();
    }
    key.replace("[]", "").replace('[', ".").replace(']', "")
}

/// All findings for a job: the UI's own checks, then the job validator's (wanlora-config), each
/// placed at its form field. Where the UI already reports an error at a field, the validator's
/// findings for that field are left out (they would say the same thing about the same folder).
/// `${VAR}` references are not filled from the UI's environment.
pub fn validate(tree: &Tree, yaml: &str, dirs: &DataDirs) -> Vec<Finding> {
    let mut out = check(tree, dirs);
    let source = wanlora_config::SourceInfo {
        name: "job".into(),
        format: wanlora_config::Format::Yaml,
        base_dir: dirs.root.clone(),
    };
    let validated = wanlora_config::parse_job_with_env(yaml, &source, &|_| None);
    for f in validated.findings {
        let path = form_path(&f.key);
        let covered = out
            .iter()
            .any(|mine| mine.severity == Severity::Error && !path.is_empty() && mine.path == path);
        if covered {
            continue;
        }
        out.push(Finding {
            path,
            severity: f.severity,
            message: f.message,
            hint: f.hint,
            line: f.line.map(|l| l as u64),
            column: f.column.map(|c| c as u64),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "job: extension
config:
  name: my_lora
  process:
    - type: diffusion_trainer
      training_folder: /somewhere/else
      train: {steps: 100, lr: 1e-4}
      datasets:
        - folder_path: DATASET
      sample:
        samples:
          - prompt: a cat
            ctrl_img: CTRL
meta: {name: '[name]', version: '1.0'}
";

    fn setup() -> (tempfile::TempDir, DataDirs) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = DataDirs::create(dir.path()).unwrap();
        std::fs::create_dir(dirs.datasets.join("clips")).unwrap();
        std::fs::write(dirs.uploads.join("f.png"), b"x").unwrap();
        (dir, dirs)
    }

    fn job(dirs: &DataDirs, dataset: &str, ctrl: &str) -> String {
        JOB.replace(
            "DATASET",
            &dirs.datasets.join(dataset).display().to_string(),
        )
        .replace("CTRL", ctrl)
    }

    #[test]
    fn a_job_inside_the_data_folder_passes_and_round_trips() {
        let (_d, dirs) = setup();
        let text = job(
            &dirs,
            "clips",
            &dirs.uploads.join("f.png").display().to_string(),
        );
        let mut tree = parse_yaml(&text).unwrap();
        assert_eq!(check(&tree, &dirs), vec![]);
        assert_eq!(job_name(&tree), Some("my_lora"));
        assert_eq!(total_steps(&tree), 100);
        confine(&mut tree, &dirs);
        let again = parse_yaml(&to_yaml(&tree).unwrap()).unwrap();
        assert_eq!(again, tree);
        assert_eq!(
            again.pointer("/config/process/0/training_folder").unwrap(),
            &Tree::Str(dirs.output.display().to_string())
        );
        assert_eq!(
            again.pointer("/meta/version").and_then(Tree::as_str),
            Some("1.0")
        );
    }

    #[test]
    fn folders_outside_the_data_folder_are_findings_at_their_field() {
        let (_d, dirs) = setup();
        let tree = parse_yaml(&job(&dirs, "../../etc", "/etc/passwd")).unwrap();
        let findings = check(&tree, &dirs);
        let paths: Vec<&str> = findings.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "config.process.0.datasets.0.folder_path",
                "config.process.0.sample.samples.0.ctrl_img"
            ]
        );
        assert!(has_errors(&findings));
    }

    #[test]
    fn bad_names_and_missing_parts_are_reported() {
        let (_d, dirs) = setup();
        let tree = parse_yaml("job: other\nconfig: {name: ../x}\n").unwrap();
        let paths: Vec<String> = check(&tree, &dirs).into_iter().map(|f| f.path).collect();
        assert_eq!(paths, vec!["job", "config.name", "config.process"]);
    }

    #[test]
    fn validator_keys_become_form_paths() {
        assert_eq!(
            form_path("config.process[0].datasets[1].num_frames"),
            "config.process.0.datasets.1.num_frames"
        );
        assert_eq!(form_path("(file)"), "");
    }

    #[test]
    fn the_job_validator_reports_at_the_field() {
        let (_d, dirs) = setup();
        let text = job(
            &dirs,
            "clips",
            &dirs.uploads.join("f.png").display().to_string(),
        )
        .replace("lr: 1e-4", "lr: 1e-4, optimizer: sgd_with_magic");
        let tree = parse_yaml(&text).unwrap();
        let findings = validate(&tree, &text, &dirs);
        let optimizer = findings
            .iter()
            .find(|f| f.path == "config.process.0.train.optimizer")
            .unwrap_or_else(|| panic!("{findings:?}"));
        assert_eq!(optimizer.severity, Severity::Error);
        assert!(optimizer.line.is_some());
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_yaml("job: extension\nconfig:\n  name: [unclosed\n").unwrap_err();
        assert_eq!(err.severity, Severity::Error);
        assert!(err.line.is_some(), "{err:?}");
        assert!(parse_yaml("- a list\n").is_err());
    }
}
