//! The GPU queue: jobs whose device sets overlap never run at once, the GPU field has one spelling
//! per device list, and two UIs on one data folder never start a queued job twice.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn create(h: &Harness, name: &str, gpu: &str) -> i64 {
    h.create_job(name, gpu, true).await
}

async fn stop(h: &Harness, id: i64) {
    h.post(&format!("/api/jobs/{id}/stop"), json!({})).await;
    h.wait_state(id, "stopped").await;
}

#[tokio::test]
async fn jobs_on_overlapping_gpus_wait_for_each_other() {
    let h = harness().await;
    h.dataset("clips").await;
    let pair = create(&h, "slow_pair", "0,1").await;
    let zero = create(&h, "slow_zero", "0").await;
    let one = create(&h, "slow_one", "1").await;
    let two = create(&h, "slow_two", "2").await;
    h.app.supervisor.tick().await.unwrap();
    h.wait_state(pair, "running").await;
    h.wait_state(two, "running").await;
    // Both share a device with "0,1": a string comparison would have started them.
    h.app.supervisor.tick().await.unwrap();
    h.wait_state(zero, "queued").await;
    h.wait_state(one, "queued").await;
    h.run_queue();
    stop(&h, pair).await;
    h.wait_state(zero, "running").await;
    h.wait_state(one, "running").await;
    for id in [zero, one, two] {
        stop(&h, id).await;
    }
}

#[tokio::test]
async fn the_gpu_field_is_stored_in_one_spelling() {
    let h = harness().await;
    h.dataset("clips").await;
    let folder = h.data.join("datasets/clips").display().to_string();
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": job_yaml("spelled", &folder), "gpu": " 00 , 01" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.error());
    assert_eq!(r.json()["job"]["gpu"], "0,1");
    for (bad, why) in [
        ("0,0", "listed twice"),
        ("0,,1", "CUDA device indices"),
        ("0 1", "CUDA device indices"),
    ] {
        let r = h
            .post(
                "/api/jobs",
                json!({ "yaml": job_yaml("refused", &folder), "gpu": bad }),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(r.error().contains(why), "{bad:?}: {}", r.error());
    }
    let r = h
        .call(
            axum::http::Method::PUT,
            "/api/settings",
            Some(json!({ "default_gpu": "007" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    assert_eq!(r.json()["default_gpu"], "7");
}

#[tokio::test]
async fn two_uis_on_one_data_folder_start_a_queued_job_once() {
    let h = harness().await;
    h.dataset("clips").await;
    let second_ui = wanlora_server::App::open(&config(&h.data, None, fake_trainer(h.dir.path())))
        .await
        .unwrap();
    let id = create(&h, "slow_shared", "0").await;
    // Both queues look at the same moment.
    let (a, b) = tokio::join!(h.app.supervisor.tick(), second_ui.supervisor.tick());
    a.unwrap();
    b.unwrap();
    let running = h.wait_state(id, "running").await;
    assert!(running["job"]["pid"].is_number(), "{running}");
    let log = std::fs::read_to_string(h.job_dir("slow_shared").join("log.txt")).unwrap();
    assert_eq!(log.matches("[wanlora ui] starting").count(), 1, "{log}");
    // Neither UI takes the other's just-started job for a vanished one.
    h.app.supervisor.tick().await.unwrap();
    second_ui.supervisor.tick().await.unwrap();
    h.wait_state(id, "running").await;
    h.run_queue();
    stop(&h, id).await;
}
