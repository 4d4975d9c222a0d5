//! The broken and suspicious job files under tests/fixtures/: each states in its header which findings
//! it must produce (`# expect: severity | key | line | message part | hint part`), and nothing else
//! may be reported.

use std::path::{Path, PathBuf};
use wanlora_config::{parse_job_with_env, Finding, Severity, SourceInfo, Validated};

#[derive(Debug)]
struct Expect {
    severity: Severity,
    key: String,
    line: Option<usize>,
    message: String,
    hint: String,
}

fn expectations(text: &str, path: &Path) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|spec| {
            let parts: Vec<&str> = spec.split(" | ").map(str::trim).collect();
            assert_eq!(
                parts.len(),
                5,
                "{}: malformed expectation {spec:?}",
                path.display()
            );
            Expect {
                severity: match parts[0] {
                    "error" => Severity::Error,
                    "warning" => Severity::Warning,
                    "note" => Severity::Note,
                    other => panic!("{}: unknown severity {other}", path.display()),
                },
                key: parts[1].to_string(),
                line: parts[2].parse().ok(),
                message: parts[3].to_string(),
                hint: parts[4].to_string(),
            }
        })
        .collect()
}

fn matches(finding: &Finding, expect: &Expect) -> bool {
    finding.severity == expect.severity
        && finding.key == expect.key
        && (expect.line.is_none() || finding.line == expect.line)
        && finding.message.contains(&expect.message)
        && finding.hint.contains(&expect.hint)
}

fn fixtures(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Validates a fixture with an empty environment (so `${VAR}` is unset whatever the machine has).
fn validate(path: &Path) -> (String, Validated) {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let validated = parse_job_with_env(&text, &SourceInfo::for_file(path), &|_| None);
    (text, validated)
}

/// Every expectation is met by its own finding, and there is no other finding.
fn check_exactly(path: &Path, text: &str, validated: &Validated) -> Result<(), String> {
    let expects = expectations(text, path);
    if expects.is_empty() {
        return Err(format!("{}: no `# expect:` lines", path.display()));
    }
    let mut unmatched: Vec<&Finding> = validated.findings.iter().collect();
    let mut problems = Vec::new();
    for expect in &expects {
        match unmatched.iter().position(|f| matches(f, expect)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!("  missing: {expect:?}")),
        }
    }
    for finding in unmatched {
        problems.push(format!("  unexpected: {}", finding.display_in("fixture")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let all: Vec<String> = validated
            .findings
            .iter()
            .map(|f| format!("    {}", f.display_in("fixture")))
            .collect();
        Err(format!(
            "{}:\n{}\n  findings were:\n{}",
            path.display(),
            problems.join("\n"),
            all.join("\n")
        ))
    }
}

#[test]
fn every_bad_fixture_is_rejected_naming_the_key() {
    let files = fixtures("bad");
    assert!(files.len() >= 40, "only {} bad fixtures", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let (text, validated) = validate(path);
        if validated.is_valid() {
            failures.push(format!("{}: accepted", path.display()));
            continue;
        }
        if let Err(e) = check_exactly(path, &text, &validated) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn warning_fixtures_are_accepted_with_exactly_their_warnings() {
    let files = fixtures("warn");
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for path in &files {
        let (text, validated) = validate(path);
        if !validated.is_valid() {
            let errors: Vec<String> = validated
                .errors()
                .map(|f| f.display_in("fixture").to_string())
                .collect();
            failures.push(format!(
                "{}: rejected:\n{}",
                path.display(),
                errors.join("\n")
            ));
            continue;
        }
        if let Err(e) = check_exactly(path, &text, &validated) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_base_fixture_has_no_findings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/minimal.yaml");
    let (_, validated) = validate(&path);
    assert!(validated.job.is_some());
    assert!(validated.findings.is_empty(), "{:#?}", validated.findings);
}
