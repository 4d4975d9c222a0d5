//! The cache is shared with Python's `huggingface_hub` 1.x in both directions.

mod support;

use std::collections::BTreeMap;
use std::fs;

use support::{sha256_hex, FakeHub};
use wanlora_hub::{
    fetch, resolve, CheckOptions, Component, HubConfig, ModelSpec, Origin, Stage, State,
};

/// The tiny test models have the A14B architecture, not its sizes.
const SMALL: CheckOptions = CheckOptions {
    exact_sizes: false,
    arch: wanlora_config::ModelArch::Wan22_14bI2v,
};
const REPO: &str = "wan-test/tiny-i2v";

fn spec() -> ModelSpec {
    ModelSpec {
        name_or_path: Some(REPO.into()),
        train_high_noise: true,
        train_low_noise: true,
        ..ModelSpec::default()
    }
}

/// Files of the tiny pipeline that training loads.
fn needed_files(repo: &support::FakeRepo) -> Vec<String> {
    repo.files
        .iter()
        .map(|f| f.path.clone())
        .filter(|p| {
            [
                "transformer/",
                "transformer_2/",
                "text_encoder/",
                "tokenizer/",
                "vae/",
            ]
            .iter()
            .any(|d| p.starts_with(d))
        })
        .collect()
}

const READ_BACK: &str = r#"
import hashlib, json, sys
import huggingface_hub
from huggingface_hub import hf_hub_download, snapshot_download, scan_cache_dir
major = int(huggingface_hub.__version__.split(".")[0])
assert major == 1, f"huggingface_hub {huggingface_hub.__version__} is not 1.x"
repo = sys.argv[1]
files = {}
for name in sys.argv[2:]:
    path = hf_hub_download(repo, name)
    files[name] = hashlib.sha256(open(path, "rb").read()).hexdigest()
scan = scan_cache_dir()
repos = {r.repo_id: sorted(str(f.file_path.relative_to(rev.snapshot_path)) for rev in r.revisions for f in rev.files) for r in scan.repos}
print(json.dumps({"snapshot": snapshot_download(repo), "files": files,
                  "warnings": [str(w) for w in scan.warnings], "scanned": repos}))
"#;

#[test]
fn python_huggingface_hub_reads_back_our_cache_offline() {
    let repo = support::tiny_pipeline_repo(REPO);
    let hub = FakeHub::start(vec![repo.clone()]);
    let home = tempfile::tempdir().unwrap();
    let cfg = HubConfig::new(&hub.url, &home.path().join("hub"));
    fetch(&spec(), &cfg, Stage::Training, &SMALL).unwrap();

    let names = needed_files(&repo);
    let mut args = vec![REPO];
    args.extend(names.iter().map(String::as_str));
    let home_str = home.path().display().to_string();
    let stdout = support::run_python(
        READ_BACK,
        &args,
        &[("HF_HOME", &home_str), ("HF_HUB_OFFLINE", "1")],
    );
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();

    for name in &names {
        assert_eq!(
            out["files"][name],
            sha256_hex(&repo.file(name).bytes),
            "{name}"
        );
    }
    let snapshot = home
        .path()
        .join("hub/models--wan-test--tiny-i2v/snapshots")
        .join(&repo.commit);
    assert_eq!(out["snapshot"], snapshot.display().to_string());
    assert_eq!(out["warnings"], serde_json::json!([]));
    let scanned: Vec<String> = serde_json::from_value(out["scanned"][REPO].clone()).unwrap();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(scanned, expected);
}

const DOWNLOAD: &str = r#"
import sys
from huggingface_hub import hf_hub_download
for name in sys.argv[2:]:
    hf_hub_download(sys.argv[1], name)
"#;

#[test]
fn a_cache_filled_by_python_is_used_without_downloading() {
    let repo = support::tiny_pipeline_repo(REPO);
    let hub = FakeHub::start(vec![repo.clone()]);
    let home = tempfile::tempdir().unwrap();
    let names = needed_files(&repo);
    let mut args = vec![REPO];
    args.extend(names.iter().map(String::as_str));
    let home_str = home.path().display().to_string();
    // Python downloads from the fake hub, as it would from huggingface.co.
    support::run_python(
        DOWNLOAD,
        &args,
        &[("HF_HOME", &home_str), ("HF_ENDPOINT", &hub.url)],
    );
    assert!(
        hub.seen().iter().any(|s| s.path.starts_with("/lfs/")),
        "python did not download"
    );

    // Offline, every component resolves from that cache.
    let mut cfg = HubConfig::new(&hub.url, &home.path().join("hub"));
    cfg.offline = true;
    let model = resolve(&spec(), &cfg).unwrap();
    let mut served = BTreeMap::new();
    for c in Component::ALL {
        let rc = model.component(c).unwrap();
        assert_eq!(rc.state, State::Ready, "{c}: {:?}", rc.state);
        assert!(
            matches!(&rc.origin, Some(Origin::Cache { commit, .. }) if *commit == repo.commit),
            "{c}"
        );
        for f in &rc.files {
            let on_disk = fs::read(f.path.as_ref().unwrap()).unwrap();
            served.insert(f.name.clone(), on_disk == repo.file(&f.name).bytes);
        }
    }
    assert_eq!(served.len(), names.len());
    assert!(served.values().all(|same| *same), "{served:?}");

    // Online, a fetch finds everything cached and downloads nothing.
    hub.clear_seen();
    cfg.offline = false;
    fetch(&spec(), &cfg, Stage::Everything, &SMALL).unwrap();
    assert!(hub.seen().is_empty(), "{:?}", hub.seen());
}
