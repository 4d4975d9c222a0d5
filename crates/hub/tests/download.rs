//! Downloads from a local server that answers like the Hugging Face hub.

mod support;

use std::fs;
use std::path::Path;

use support::{sha256_hex, FakeFile, FakeHub, FakeRepo};
use wanlora_hub::{
    check_components_on_hub, fetch, report, resolve, CheckOptions, Component, Error, HubConfig,
    ModelSpec, Origin, Stage, State,
};

/// The tiny test models have the A14B architecture, not its sizes.
const SMALL: CheckOptions = CheckOptions {
    exact_sizes: false,
    arch: wanlora_config::ModelArch::Wan22_14bI2v,
};
const REPO: &str = "wan-test/tiny-i2v";

fn spec(train_high: bool, train_low: bool, samples: bool) -> ModelSpec {
    ModelSpec {
        name_or_path: Some(REPO.into()),
        train_high_noise: train_high,
        train_low_noise: train_low,
        need_untrained_expert_for_samples: samples,
        ..ModelSpec::default()
    }
}

fn config(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig::new(&hub.url, cache)
}

fn downloaded_paths(hub: &FakeHub) -> Vec<String> {
    hub.seen()
        .into_iter()
        .filter(|s| s.path.contains("/resolve/"))
        .map(|s| {
            s.path
                .split("/resolve/")
                .nth(1)
                .unwrap()
                .split_once('/')
                .unwrap()
                .1
                .to_string()
        })
        .collect()
}

#[test]
fn training_fetches_only_the_trained_expert_text_encoder_tokenizer_and_vae() {
    let repo = support::tiny_pipeline_repo(REPO);
    let hub = FakeHub::start(vec![repo.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, dir.path());
    let model = fetch(&spec(true, false, true), &cfg, Stage::Training, &SMALL).unwrap();

    let fetched = downloaded_paths(&hub);
    assert!(fetched.iter().any(|p| p.starts_with("transformer/")));
    for never in [
        "transformer_2/",
        "scheduler/",
        "README.md",
        "model_index.json",
        ".gitattributes",
    ] {
        assert!(
            !fetched.iter().any(|p| p.starts_with(never)),
            "{never} was fetched: {fetched:?}"
        );
    }
    for c in [
        Component::HighNoiseExpert,
        Component::TextEncoder,
        Component::Tokenizer,
        Component::Vae,
    ] {
        let rc = model.component(c).unwrap();
        assert_eq!(rc.state, State::Ready, "{c}");
        assert!(
            matches!(rc.origin, Some(Origin::Cache { .. })),
            "{c}: {:?}",
            rc.origin
        );
    }
    let low = model.component(Component::LowNoiseExpert).unwrap();
    assert!(
        matches!(low.state, State::Download { files: 4, .. }),
        "{:?}",
        low.state
    );

    // The bytes on disk are the served bytes, reached through the snapshot links.
    let high = model.component(Component::HighNoiseExpert).unwrap();
    let shards = high.weight_files();
    assert_eq!(shards.len(), 2);
    assert_eq!(
        fs::read(&shards[1]).unwrap(),
        repo.file("transformer/diffusion_pytorch_model-00002-of-00002.safetensors")
            .bytes
    );
    assert!(high.config_file().is_some() && high.index_file().is_some());

    // The untrained expert comes only when samples first run, in a separate call.
    hub.clear_seen();
    let model = fetch(&spec(true, false, true), &cfg, Stage::Samples, &SMALL).unwrap();
    let fetched = downloaded_paths(&hub);
    assert!(
        fetched.iter().all(|p| p.starts_with("transformer_2/")),
        "{fetched:?}"
    );
    assert_eq!(
        model.component(Component::LowNoiseExpert).unwrap().state,
        State::Ready
    );
}

#[test]
fn the_cache_has_huggingface_hub_layout() {
    let repo = support::tiny_pipeline_repo(REPO);
    let hub = FakeHub::start(vec![repo.clone()]);
    let dir = tempfile::tempdir().unwrap();
    fetch(
        &spec(true, false, false),
        &config(&hub, dir.path()),
        Stage::Training,
        &SMALL,
    )
    .unwrap();
    let root = dir.path().join("models--wan-test--tiny-i2v");
    assert_eq!(
        fs::read_to_string(root.join("refs/main")).unwrap(),
        repo.commit
    );
    let snapshot = root.join("snapshots").join(&repo.commit);
    for file in [
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/config.json",
    ] {
        let served = repo.file(file);
        let link = fs::read_link(snapshot.join(file)).unwrap();
        assert_eq!(
            link,
            Path::new("../../../blobs").join(served.etag()),
            "{file}"
        );
        assert_eq!(
            fs::read(root.join("blobs").join(served.etag())).unwrap(),
            served.bytes
        );
    }
    // LFS blobs are named by sha256, git-stored ones by their git blob hash.
    assert_eq!(
        repo.file("vae/diffusion_pytorch_model.safetensors")
            .etag()
            .len(),
        64
    );
    assert_eq!(repo.file("vae/config.json").etag().len(), 40);
    assert!(root
        .join("blobs")
        .join(repo.file("vae/config.json").etag())
        .is_file());
    assert!(dir
        .path()
        .join(".locks/models--wan-test--tiny-i2v")
        .is_dir());
    let leftovers: Vec<_> = fs::read_dir(root.join("blobs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let repo = support::tiny_pipeline_repo(REPO);
    let big = repo
        .file("transformer/diffusion_pytorch_model-00002-of-00002.safetensors")
        .clone();
    let hub = FakeHub::start(vec![repo]);
    hub.cut_connection_once(&big);
    let dir = tempfile::tempdir().unwrap();
    let model = fetch(
        &spec(true, false, false),
        &config(&hub, dir.path()),
        Stage::Training,
        &SMALL,
    )
    .unwrap();

    let lfs_path = format!("/lfs/{}", sha256_hex(&big.bytes));
    let gets: Vec<_> = hub
        .seen()
        .into_iter()
        .filter(|s| s.path == lfs_path && s.is_transfer())
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    let resumed_at: usize = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("second request without a Range: {:?}", gets[1]));
    assert!(
        resumed_at > 0 && resumed_at < big.bytes.len(),
        "{resumed_at}"
    );
    let shard = &model
        .component(Component::HighNoiseExpert)
        .unwrap()
        .weight_files()[1];
    assert_eq!(fs::read(shard).unwrap(), big.bytes);
}

#[test]
fn a_partial_file_left_by_an_earlier_run_is_continued() {
    let repo = support::tiny_pipeline_repo(REPO);
    let big = repo
        .file("transformer/diffusion_pytorch_model-00002-of-00002.safetensors")
        .clone();
    let hub = FakeHub::start(vec![repo]);
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("models--wan-test--tiny-i2v/blobs");
    fs::create_dir_all(&blobs).unwrap();
    let half = big.bytes.len() / 2;
    fs::write(
        blobs.join(format!("{}.incomplete", big.etag())),
        &big.bytes[..half],
    )
    .unwrap();

    let model = fetch(
        &spec(true, false, false),
        &config(&hub, dir.path()),
        Stage::Training,
        &SMALL,
    )
    .unwrap();
    let lfs_path = format!("/lfs/{}", big.etag());
    let gets: Vec<_> = hub
        .seen()
        .into_iter()
        .filter(|s| s.path == lfs_path && s.is_transfer())
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    let shard = &model
        .component(Component::HighNoiseExpert)
        .unwrap()
        .weight_files()[1];
    assert_eq!(fs::read(shard).unwrap(), big.bytes);
}

#[test]
fn a_checksum_mismatch_is_detected_and_nothing_is_kept() {
    let repo = support::tiny_pipeline_repo(REPO);
    let vae = repo.file("vae/diffusion_pytorch_model.safetensors").clone();
    let hub = FakeHub::start(vec![repo.clone()]);
    hub.corrupt(&vae);
    let dir = tempfile::tempdir().unwrap();
    let err = fetch(
        &spec(true, false, false),
        &config(&hub, dir.path()),
        Stage::Training,
        &SMALL,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("vae/diffusion_pytorch_model.safetensors")
            && text.contains("sha256")
            && text.contains(&vae.etag()),
        "{text}"
    );
    let root = dir.path().join("models--wan-test--tiny-i2v");
    assert!(!root.join("blobs").join(vae.etag()).exists());
    assert!(!root
        .join(format!("blobs/{}.incomplete", vae.etag()))
        .exists());
    assert!(!root
        .join("snapshots")
        .join(&repo.commit)
        .join("vae/diffusion_pytorch_model.safetensors")
        .exists());
    // The other files are kept: the next run downloads the VAE only.
    assert!(root
        .join("snapshots")
        .join(&repo.commit)
        .join("vae/config.json")
        .exists());
}

#[test]
fn offline_mode_lists_exactly_the_missing_files_and_sends_nothing() {
    let repo = support::tiny_pipeline_repo(REPO);
    let hub = FakeHub::start(vec![repo.clone()]);
    let dir = tempfile::tempdir().unwrap();
    fetch(
        &spec(true, false, false),
        &config(&hub, dir.path()),
        Stage::Training,
        &SMALL,
    )
    .unwrap();
    // A shard of the cached expert went missing, and the other expert was never fetched.
    let gone = "transformer/diffusion_pytorch_model-00002-of-00002.safetensors";
    fs::remove_file(
        dir.path()
            .join("models--wan-test--tiny-i2v/snapshots")
            .join(&repo.commit)
            .join(gone),
    )
    .unwrap();
    hub.clear_seen();

    let mut offline = config(&hub, dir.path());
    offline.offline = true;
    let err = fetch(&spec(true, true, false), &offline, Stage::Training, &SMALL).unwrap_err();
    let Error::Offline { missing, .. } = &err else {
        panic!("expected an offline error, got {err}")
    };
    assert!(
        missing
            .iter()
            .any(|m| m.ends_with(&format!("{REPO}@main: {gone}"))),
        "{missing:?}"
    );
    assert!(
        missing
            .iter()
            .any(|m| m.contains("low-noise expert") && m.contains("transformer_2/")),
        "{missing:?}"
    );
    assert!(
        !missing
            .iter()
            .any(|m| m.contains("vae") || m.contains("tokenizer")),
        "{missing:?}"
    );
    let text = err.to_string();
    assert!(text.contains("HF_HUB_OFFLINE"), "{text}");
    assert!(hub.seen().is_empty(), "offline mode sent {:?}", hub.seen());

    // Offline resolution of what is complete still works.
    let model = resolve(&spec(true, false, false), &offline).unwrap();
    assert_eq!(model.component(Component::Vae).unwrap().state, State::Ready);
}

#[test]
fn a_gated_repo_without_a_token_names_hf_token() {
    let mut repo = support::tiny_pipeline_repo("wan-test/gated");
    repo.gated = true;
    let hub = FakeHub::start(vec![repo]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(true, false, false);
    s.name_or_path = Some("wan-test/gated".into());

    let err = fetch(&s, &config(&hub, dir.path()), Stage::Training, &SMALL).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unauthorized {
                token_sent: false,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("HF_TOKEN") && text.contains("wan-test/gated") && text.contains("401"),
        "{text}"
    );

    let mut wrong = config(&hub, dir.path());
    wrong.token = Some("hf_wrong".into());
    let text = fetch(&s, &wrong, Stage::Training, &SMALL)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("token in HF_TOKEN was not accepted"),
        "{text}"
    );

    let mut right = config(&hub, dir.path());
    right.token = Some(FakeHub::TOKEN.into());
    let model = fetch(&s, &right, Stage::Training, &SMALL).unwrap();
    assert!(model
        .component(Component::HighNoiseExpert)
        .unwrap()
        .is_ready());
    // The token went to the endpoint's resolve URLs, never to the storage host.
    let seen = hub.seen();
    assert!(seen.iter().any(|r| r.path.contains("/resolve/")
        && r.authorization.as_deref() == Some("Bearer hf_test_token")));
    assert!(seen
        .iter()
        .filter(|r| r.path.starts_with("/lfs/"))
        .all(|r| r.authorization.is_none()));
}

#[test]
fn hf_endpoint_hf_home_and_hf_token_are_read_from_the_environment() {
    let mut repo = support::tiny_pipeline_repo(REPO);
    repo.gated = true;
    let hub = FakeHub::start(vec![repo]);
    let home = tempfile::tempdir().unwrap();
    let vars = [
        ("HF_ENDPOINT", hub.url.clone()),
        ("HF_HOME", home.path().display().to_string()),
        ("HF_TOKEN", FakeHub::TOKEN.to_string()),
    ];
    let mut cfg =
        HubConfig::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()));
    cfg.show_progress = false;
    fetch(&spec(true, false, false), &cfg, Stage::Training, &SMALL).unwrap();
    assert!(home
        .path()
        .join("hub/models--wan-test--tiny-i2v/refs/main")
        .is_file());
}

#[test]
fn resolve_reports_what_would_be_downloaded_without_downloading() {
    let repo = support::tiny_pipeline_repo(REPO);
    let hub = FakeHub::start(vec![repo.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let model = resolve(&spec(true, false, false), &config(&hub, dir.path())).unwrap();
    let high = model.component(Component::HighNoiseExpert).unwrap();
    let expected: u64 = repo
        .files
        .iter()
        .filter(|f| f.path.starts_with("transformer/"))
        .map(|f| f.bytes.len() as u64)
        .sum();
    assert_eq!(
        high.state,
        State::Download {
            bytes: expected,
            files: 4
        }
    );
    assert_eq!(high.total_bytes(), expected);
    assert_eq!(
        model.component(Component::LowNoiseExpert).unwrap().state,
        State::NotNeeded
    );
    assert!(
        hub.seen().iter().all(|s| s.path.starts_with("/api/")),
        "{:?}",
        hub.seen()
    );
    assert!(!dir.path().join("models--wan-test--tiny-i2v").exists());
    let err = model.require(Stage::Training).unwrap_err().to_string();
    assert!(err.contains("wanlora models fetch"), "{err}");

    // The headers of what would be downloaded are read with bounded ranges, for the report.
    let cfg = config(&hub, dir.path());
    let checks = check_components_on_hub(&model, &cfg, Stage::Everything, &SMALL).unwrap();
    let text = report::render(&model, &checks);
    assert!(
        text.contains("high-noise expert — for training — to download: 4 files"),
        "{text}"
    );
    assert!(
        text.contains("2 shards")
            && text.contains("Wan image-to-video transformer (dim 8, 2 blocks"),
        "{text}"
    );
    assert!(text.contains("umT5 encoder"), "{text}");
    assert!(!hub
        .seen()
        .iter()
        .any(|r| r.is_transfer() && r.path.starts_with("/lfs/")));
    assert!(!dir.path().join("models--wan-test--tiny-i2v").exists());
}

#[test]
fn a_single_file_inside_a_repository_is_fetched_alone() {
    let vae_bytes =
        support::safetensors_bytes(&support::as_specs(&support::tiny_vae_original(16)), 9);
    let comfy = FakeRepo {
        id: "comfy-test/repackaged".into(),
        commit: "2222222222222222222222222222222222222222".into(),
        files: vec![
            FakeFile::lfs("split_files/vae/wan_2.1_vae.safetensors", vae_bytes.clone()),
            FakeFile::lfs("split_files/vae/wan2.2_vae.safetensors", b"other".to_vec()),
        ],
        gated: false,
    };
    let hub = FakeHub::start(vec![support::tiny_pipeline_repo(REPO), comfy]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(true, false, false);
    s.vae_path = Some("comfy-test/repackaged/split_files/vae/wan_2.1_vae.safetensors".into());
    let model = fetch(&s, &config(&hub, dir.path()), Stage::Training, &SMALL).unwrap();
    let vae = model.component(Component::Vae).unwrap();
    assert_eq!(vae.weight_files().len(), 1);
    assert_eq!(fs::read(&vae.weight_files()[0]).unwrap(), vae_bytes);
    assert!(!downloaded_paths(&hub)
        .iter()
        .any(|p| p.contains("wan2.2_vae") || p.starts_with("vae/")));
}

#[test]
fn unknown_repositories_and_revisions_are_named() {
    let hub = FakeHub::start(vec![support::tiny_pipeline_repo(REPO)]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(true, false, false);
    s.name_or_path = Some(format!("{REPO}@v9"));
    let text = fetch(&s, &config(&hub, dir.path()), Stage::Training, &SMALL)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("revision v9") && text.contains("404"),
        "{text}"
    );
    s.name_or_path = Some("nobody/nothing".into());
    let text = fetch(&s, &config(&hub, dir.path()), Stage::Training, &SMALL)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("nobody/nothing") && text.contains("HF_TOKEN"),
        "{text}"
    );
}

#[test]
fn a_wrong_model_on_the_hub_is_named_before_it_is_downloaded() {
    let mut repo = support::tiny_pipeline_repo("wan-test/t2v");
    // Make the high-noise expert a text-to-video one: 16 input channels.
    let t2v = support::safetensors_bytes(
        &support::as_specs(&support::tiny_expert_original("", 8, 16, 2)),
        5,
    );
    repo.files.retain(|f| !f.path.starts_with("transformer/"));
    repo.files.push(FakeFile::lfs(
        "transformer/diffusion_pytorch_model.safetensors",
        t2v,
    ));
    let hub = FakeHub::start(vec![repo]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(true, false, false);
    s.name_or_path = Some("wan-test/t2v".into());
    let err = fetch(&s, &config(&hub, dir.path()), Stage::Training, &SMALL).unwrap_err();
    let Error::Checks(failures) = &err else {
        panic!("{err}")
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    let text = failures[0].to_string();
    assert!(
        text.contains("wan-test/t2v@11111111/transformer/diffusion_pytorch_model.safetensors")
            && text.contains("text-to-video"),
        "{text}"
    );
    // Only headers were read: no file was transferred, nothing entered the cache.
    let seen = hub.seen();
    assert!(seen
        .iter()
        .any(|r| r.path.starts_with("/lfs/") && !r.is_transfer()));
    assert!(
        !seen
            .iter()
            .any(|r| r.path.starts_with("/lfs/") && r.is_transfer()),
        "{seen:?}"
    );
    assert!(!dir.path().join("models--wan-test--t2v/blobs").exists());
}

#[test]
fn nothing_is_downloaded_while_another_needed_part_is_missing() {
    let hub = FakeHub::start(vec![support::tiny_pipeline_repo(REPO)]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(true, false, false);
    s.vae_path = Some(
        dir.path()
            .join("no_such_vae.safetensors")
            .display()
            .to_string(),
    );
    let err = fetch(&s, &config(&hub, dir.path()), Stage::Training, &SMALL).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("model.vae_path") && text.contains("no_such_vae.safetensors"),
        "{text}"
    );
    assert!(
        !hub.seen()
            .iter()
            .any(|r| r.path.contains("/resolve/") || r.path.starts_with("/lfs/")),
        "{:?}",
        hub.seen()
    );
}
