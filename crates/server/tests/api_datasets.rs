//! Datasets, dashboard facts, settings and the form's YAML round trip, through the HTTP routes.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::*;
use serde_json::json;

fn real_mp4(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("real.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=8",
            "-t",
            "0.5",
        ])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .expect("ffmpeg is part of the project's set-up (scripts/setup.sh)");
    assert!(ok.success());
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn dataset_lifecycle() {
    let h = harness().await;
    assert_eq!(
        h.get("/api/datasets").await.json(),
        json!({ "datasets": [] })
    );
    let r = h.post("/api/datasets", json!({ "name": "my clips" })).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.json()["folder"],
        h.data.join("datasets/my clips").display().to_string()
    );
    assert_eq!(
        h.post("/api/datasets", json!({ "name": "my clips" }))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        h.post("/api/datasets", json!({ "name": "x", "extra": 1 }))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let video = real_mp4(h.dir.path());
    let r = h
        .upload(
            "/api/datasets/my%20clips/upload",
            &[
                ("turn.mp4", &video),
                ("turn.txt", b"a cube turns"),
                ("still.png", PNG),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    assert_eq!(
        r.json()["saved"],
        json!(["turn.mp4", "turn.txt", "still.png"])
    );
    let listed = h.get("/api/datasets").await.json();
    assert_eq!(listed["datasets"][0]["videos"], 1);
    assert_eq!(listed["datasets"][0]["images"], 1);
    assert_eq!(listed["datasets"][0]["captions"], 1);

    let one = h.get("/api/datasets/my%20clips").await.json();
    assert_eq!(one["items"][0]["file"], "still.png");
    assert_eq!(one["items"][0]["caption"], serde_json::Value::Null);
    assert_eq!(one["items"][1]["file"], "turn.mp4");
    assert_eq!(one["items"][1]["kind"], "video");
    assert_eq!(one["items"][1]["caption"], "a cube turns");

    // The clip, whole and by range (video seeking).
    let whole = h.get("/api/datasets/my%20clips/files/turn.mp4").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.bytes, video);
    assert_eq!(whole.headers[header::CONTENT_TYPE], "video/mp4");
    let ranged = h
        .send(
            Request::builder()
                .uri("/api/datasets/my%20clips/files/turn.mp4")
                .header(header::HOST, "localhost:8675")
                .header(header::RANGE, "bytes=4-11")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes, b"ftypisom");

    // Thumbnails: a JPEG of the video's first frame; an image is its own thumbnail.
    let thumb = h.get("/api/datasets/my%20clips/thumbnails/turn.mp4").await;
    assert_eq!(thumb.status, StatusCode::OK, "{}", thumb.error());
    assert_eq!(&thumb.bytes[..3], &[0xFF, 0xD8, 0xFF]);
    let thumb = h.get("/api/datasets/my%20clips/thumbnails/still.png").await;
    assert_eq!(thumb.bytes, PNG);
    assert_eq!(
        h.get("/api/datasets/my%20clips/thumbnails/turn.txt")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Inline caption editing.
    let r = h
        .call(
            Method::PUT,
            "/api/datasets/my%20clips/captions/still.png",
            Some(json!({ "caption": "a still frame" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        std::fs::read_to_string(h.data.join("datasets/my clips/still.txt")).unwrap(),
        "a still frame"
    );
    let r = h
        .call(
            Method::PUT,
            "/api/datasets/my%20clips/captions/missing.png",
            Some(json!({ "caption": "x" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .call(
            Method::PUT,
            "/api/datasets/my%20clips/captions/still.png",
            Some(json!({ "caption": "a\u{0}b" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Delete a clip (its caption goes too), then the dataset.
    let r = h
        .call(
            Method::DELETE,
            "/api/datasets/my%20clips/files/turn.mp4",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!h.data.join("datasets/my clips/turn.txt").exists());
    assert_eq!(
        h.call(
            Method::DELETE,
            "/api/datasets/my%20clips/files/turn.mp4",
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/api/datasets/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.upload("/api/datasets/nope/upload", &[("a.png", PNG)])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .call(Method::DELETE, "/api/datasets/my%20clips", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!h.data.join("datasets/my clips").exists());
    assert_eq!(
        h.call(Method::DELETE, "/api/datasets/my%20clips", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn system_reports_disk_and_gpus_or_why_not() {
    let h = harness().await;
    let v = h.get("/api/system").await.json();
    assert!(v["disk"]["total_bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["data_dir"], h.data.display().to_string());
    assert_eq!(v["max_upload_bytes"], 64 * 1024);
    // Either NVML lists GPUs, or the reason is a readable line.
    let gpus = v["gpus"].as_array().unwrap();
    if gpus.is_empty() {
        assert!(v["gpu_error"].as_str().unwrap().contains("NVML"), "{v}");
    } else {
        assert!(v["gpu_error"].is_null());
        assert!(gpus[0]["memory_total_bytes"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn settings_round_trip_and_keep_the_token_secret() {
    let h = harness().await;
    assert_eq!(
        h.get("/api/settings").await.json(),
        json!({ "hf_token_set": false, "default_gpu": "0" })
    );
    let r = h
        .call(
            Method::PUT,
            "/api/settings",
            Some(json!({ "hf_token": "hf_secret", "default_gpu": "1" })),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({ "hf_token_set": true, "default_gpu": "1" })
    );
    assert!(!String::from_utf8_lossy(&h.get("/api/settings").await.bytes).contains("hf_secret"));
    for bad in [json!({ "default_gpu": "gpu0" }), json!({ "unknown": 1 })] {
        let r = h
            .call(Method::PUT, "/api/settings", Some(bad.clone()))
            .await;
        assert!(r.status.is_client_error(), "{bad}");
    }
    let r = h
        .call(
            Method::PUT,
            "/api/settings",
            Some(json!({ "hf_token": "" })),
        )
        .await;
    assert_eq!(r.json()["hf_token_set"], false);
}

#[tokio::test]
async fn yaml_and_form_tree_round_trip_with_findings() {
    let h = harness().await;
    let folder = h.dataset("clips").await;
    let yaml = job_yaml("round_trip", &folder);
    let parsed = h.post("/api/config/parse", json!({ "yaml": yaml })).await;
    assert_eq!(parsed.status, StatusCode::OK);
    let body = String::from_utf8(parsed.bytes.clone()).unwrap();
    // Keys keep their document order (job before config before meta).
    let (j, c, m) = (
        body.find("\"job\"").unwrap(),
        body.find("\"config\"").unwrap(),
        body.find("\"meta\"").unwrap(),
    );
    assert!(j < c && c < m, "{body}");
    let tree = parsed.json()["tree"].clone();
    assert_eq!(tree["config"]["process"][0]["train"]["lr"], 0.0001);
    let rendered = h
        .post("/api/config/render", json!({ "tree": tree }))
        .await
        .json();
    let again = h
        .post("/api/config/parse", json!({ "yaml": rendered["yaml"] }))
        .await
        .json();
    assert_eq!(again["tree"], tree);

    let broken = h
        .post(
            "/api/config/parse",
            json!({ "yaml": "job: extension\nconfig: [\n" }),
        )
        .await
        .json();
    assert!(broken["tree"].is_null());
    assert!(broken["findings"][0]["line"].as_u64().is_some(), "{broken}");
    let outside = h
        .post(
            "/api/config/parse",
            json!({ "yaml": job_yaml("x", "/etc") }),
        )
        .await
        .json();
    assert!(outside["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |f| f["path"] == "config.process.0.datasets.0.folder_path" && f["severity"] == "error"
        ));
    let r = h.post("/api/config/render", json!({ "nottree": 1 })).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn presets_load_into_the_form_and_become_valid_once_pointed_at_uploads() {
    let h = harness().await;
    let folder = h.dataset("clips").await;
    let start_frame = h.data.join("uploads/start.png").display().to_string();
    let presets = h.get("/api/presets").await.json()["presets"]
        .as_array()
        .unwrap()
        .clone();
    let ids: Vec<&str> = presets.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "motion_24gb",
            "motion_h100",
            "style_24gb",
            "style_h100",
            "character_24gb",
            "character_h100",
            "t2v_motion_24gb",
            "t2v_style_24gb",
            "t2v_character_24gb"
        ]
    );
    for preset in &presets {
        let parsed = h
            .post("/api/config/parse", json!({ "yaml": preset["yaml"] }))
            .await
            .json();
        let mut tree = parsed["tree"].clone();
        let arch = if preset["id"].as_str().unwrap().starts_with("t2v_") {
            "wan22_14b"
        } else {
            "wan22_14b_i2v"
        };
        assert_eq!(
            tree["config"]["process"][0]["model"]["arch"], arch,
            "{}",
            preset["id"]
        );
        // As shipped, the preset's folders are the repository's examples/, not this UI's data.
        let errors: Vec<String> = parsed["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect();
        assert!(
            errors.iter().any(|p| p.ends_with("folder_path")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|p| p.ends_with("folder_path") || p.ends_with("ctrl_img")),
            "{}: {errors:?}",
            preset["id"]
        );
        // What the form does: pick the uploaded dataset and start frame.
        for ds in tree["config"]["process"][0]["datasets"]
            .as_array_mut()
            .unwrap()
        {
            ds["folder_path"] = json!(folder);
        }
        // Text-to-video samples take no start frame.
        for s in tree["config"]["process"][0]["sample"]["samples"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .filter(|_| arch == "wan22_14b_i2v")
        {
            s["ctrl_img"] = json!(start_frame);
        }
        let rendered = h
            .post("/api/config/render", json!({ "tree": tree }))
            .await
            .json();
        let errors: Vec<&serde_json::Value> = rendered["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", preset["id"]);
        let r = h
            .post("/api/jobs", json!({ "yaml": rendered["yaml"], "gpu": "0" }))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}: {}",
            preset["id"],
            r.error()
        );
    }
}

#[tokio::test]
async fn schema_lists_keys_with_choices_for_the_form() {
    let h = harness().await;
    let keys = h.get("/api/schema").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    let optimizer = keys
        .iter()
        .find(|k| k["key"] == "config.process[0].train.optimizer")
        .expect("optimizer key");
    assert_eq!(optimizer["kind"], "choice");
    assert!(optimizer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "adamw8bit"));
    assert!(keys
        .iter()
        .any(|k| k["key"] == "config.process[0].datasets[].num_frames"));
}

#[tokio::test]
async fn inspect_reports_buckets_captions_and_problems() {
    let h = harness().await;
    h.post("/api/datasets", json!({ "name": "ins" })).await;
    let video = real_mp4(h.dir.path());
    let r = h
        .upload(
            "/api/datasets/ins/upload",
            &[
                ("turn.mp4", &video),
                ("turn.txt", b"a cube turns"),
                ("broken.mp4", MP4),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    let r = h
        .get("/api/datasets/ins/inspect?num_frames=1&resolution=64")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    let v = r.json();
    assert_eq!(v["report"]["datasets"][0]["items"], 1, "{v}");
    assert_eq!(v["report"]["captions"][0]["caption"], "a cube turns");
    assert!(
        v["text"].as_str().unwrap().contains("broken.mp4"),
        "{}",
        v["text"]
    );
    assert_eq!(
        h.get("/api/datasets/nope/inspect").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/api/datasets/ins/inspect?num_frames=x").await.status,
        StatusCode::BAD_REQUEST
    );
}
