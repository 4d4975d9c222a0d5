//! One file named `owner/repo/file` (the accuracy recovery adapter), fetched from a local server
//! that answers like the Hugging Face hub: downloaded with the token into the cache once, found
//! there afterwards, a missing file named.

mod support;

use support::{FakeFile, FakeHub, FakeRepo};
use wanlora_hub::{fetch_file, HubConfig};

const REPO: &str = "ostris/accuracy_recovery_adapters";
const FILE: &str = "wan22_14b_i2v_torchao_uint4.safetensors";

#[test]
fn the_adapter_is_downloaded_once_with_the_token_and_then_found_in_the_cache() {
    let bytes = b"adapter bytes standing in for a safetensors file".to_vec();
    let repo = FakeRepo {
        id: REPO.into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        files: vec![FakeFile::lfs(FILE, bytes.clone())],
        gated: true,
    };
    let hub = FakeHub::start(vec![repo]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new(&hub.url, dir.path());
    let reference = format!("{REPO}/{FILE}");

    let refused = fetch_file(&reference, &cfg).unwrap_err().to_string();
    assert!(refused.contains(REPO), "{refused}");

    cfg.token = Some(FakeHub::TOKEN.into());
    let path = fetch_file(&reference, &cfg).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(
        path.starts_with(dir.path()),
        "in the cache: {}",
        path.display()
    );
    let transfers = hub.seen().iter().filter(|s| s.is_transfer()).count();

    // Offline now: the cached copy is enough, and nothing more is asked of the server.
    cfg.offline = true;
    assert_eq!(fetch_file(&reference, &cfg).unwrap(), path);
    assert_eq!(
        hub.seen().iter().filter(|s| s.is_transfer()).count(),
        transfers
    );

    cfg.offline = false;
    let missing = fetch_file(&format!("{REPO}/wan22_14b_t2v_missing.safetensors"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("wan22_14b_t2v_missing.safetensors"),
        "{missing}"
    );
}
