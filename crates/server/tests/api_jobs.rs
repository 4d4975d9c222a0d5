//! Jobs through the HTTP routes, with a stand-in trainer process: create, queue per GPU, run,
//! live events, control files, stop, resume, clone, delete, crash and force-kill, and recovery
//! when the UI starts again.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

async fn create(h: &Harness, name: &str, gpu: &str, start: bool) -> i64 {
    h.create_job(name, gpu, start).await
}

#[tokio::test]
async fn a_job_runs_to_completion_with_metrics_samples_checkpoints_and_log() {
    let h = harness().await;
    h.dataset("clips").await;
    h.run_queue();
    let id = create(&h, "complete_me", "0", true).await;
    let done = h.wait_state(id, "completed").await;
    assert_eq!(done["status"]["state"], "completed");
    assert_eq!(done["job"]["step"], 4);
    assert_eq!(done["job"]["total_steps"], 4);
    assert_eq!(done["job"]["pid"], Value::Null);
    assert_eq!(
        done["checkpoints"][0]["file"],
        "complete_me_000000004_high_noise.safetensors"
    );
    assert_eq!(done["samples"][0]["step"], 2);
    assert_eq!(done["samples"][0]["video"], "samples/000000002_0.mp4");

    let metrics = h.get(&format!("/api/jobs/{id}/metrics")).await.json();
    let steps: Vec<i64> = metrics["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    let log = h.get(&format!("/api/jobs/{id}/log?lines=3")).await.json();
    assert_eq!(log["lines"], json!(["step 2", "step 3", "step 4"]));
    let full_log =
        String::from_utf8(h.get(&format!("/api/jobs/{id}/files/log.txt")).await.bytes).unwrap();
    assert!(
        full_log.starts_with("[wanlora ui] starting /bin/sh"),
        "{full_log}"
    );
    assert!(
        full_log.contains("fake trainer for complete_me from step 0"),
        "{full_log}"
    );
    let sample = h
        .get(&format!("/api/jobs/{id}/files/samples/000000002_0.mp4"))
        .await;
    assert_eq!(sample.status, StatusCode::OK);
    assert_eq!(sample.headers[header::CONTENT_TYPE], "video/mp4");
    // The job.yaml the trainer ran with is in its folder, and the pid file is gone.
    assert!(h.job_dir("complete_me").join("job.yaml").is_file());
    assert!(!h.job_dir("complete_me").join("pid").exists());
}

#[tokio::test]
async fn one_queue_per_gpu() {
    let h = harness().await;
    h.dataset("clips").await;
    let first = create(&h, "slow_first", "0", true).await;
    let second = create(&h, "slow_second", "0", true).await;
    let other = create(&h, "slow_other_gpu", "1", true).await;
    h.app.supervisor.tick().await.unwrap();
    h.wait_state(first, "running").await;
    h.wait_state(other, "running").await;
    let queued = h.wait_state(second, "queued").await;
    assert_eq!(queued["job"]["queue_position"], 2);
    let queue = h.get("/api/queue").await.json();
    let gpu0: Vec<&str> = queue["gpus"]["0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(gpu0, ["slow_first", "slow_second"]);
    // The trainer sees only its GPU.
    let log = std::fs::read_to_string(h.job_dir("slow_other_gpu").join("log.txt")).unwrap();
    assert!(log.contains("CUDA_VISIBLE_DEVICES=1"), "{log}");
    h.run_queue();
    assert_eq!(
        h.post(&format!("/api/jobs/{first}/stop"), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    h.wait_state(first, "stopped").await;
    h.wait_state(second, "running").await;
    for id in [second, other] {
        h.post(&format!("/api/jobs/{id}/stop"), json!({})).await;
        h.wait_state(id, "stopped").await;
    }
}

#[tokio::test]
async fn stop_then_resume_continues_from_the_saved_step() {
    let h = harness().await;
    h.dataset("clips").await;
    h.run_queue();
    let id = create(&h, "slow_resume", "0", true).await;
    h.wait_state(id, "running").await;
    // Let it take a few steps.
    let dir = h.job_dir("slow_resume");
    for _ in 0..200 {
        if std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // save now / sample now while running: control files the trainer consumes.
    let r = h.post(&format!("/api/jobs/{id}/save-now"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .post(&format!("/api/jobs/{id}/sample-now"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for _ in 0..200 {
        if !dir.join("control/save_now").exists() && !dir.join("control/sample_now").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir.join("control/save_now").exists(),
        "the trainer did not pick up save_now"
    );
    let r = h.post(&format!("/api/jobs/{id}/stop"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(["stopping", "stopped"].contains(&r.json()["job"]["state"].as_str().unwrap()));
    let stopped = h.wait_state(id, "stopped").await;
    let stopped_at = stopped["status"]["step"].as_i64().unwrap();
    assert!(stopped_at >= 3, "{stopped}");
    // Stopping a stopped job is a conflict; so are control requests.
    assert_eq!(
        h.post(&format!("/api/jobs/{id}/stop"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        h.post(&format!("/api/jobs/{id}/save-now"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        h.post(&format!("/api/jobs/{id}/sample-now"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    // Resume: same folder, the trainer continues from its saved step.
    assert!(dir.join("control").is_dir());
    let r = h.post(&format!("/api/jobs/{id}/start"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    assert_eq!(
        h.post(&format!("/api/jobs/{id}/start"), json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    h.wait_state(id, "running").await;
    let log_path = dir.join("log.txt");
    for _ in 0..200 {
        if std::fs::read_to_string(&log_path)
            .unwrap()
            .contains(&format!("from step {stopped_at}"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains(&format!("from step {stopped_at}")), "{log}");
    assert_eq!(
        log.matches("[wanlora ui] starting").count(),
        2,
        "the log is appended to"
    );
    h.post(&format!("/api/jobs/{id}/stop"), json!({})).await;
    h.wait_state(id, "stopped").await;
}

#[tokio::test]
async fn a_crashing_trainer_fails_the_job_with_its_last_log_lines() {
    let h = harness().await;
    h.dataset("clips").await;
    h.run_queue();
    let id = create(&h, "crash_now", "0", true).await;
    let failed = h.wait_state(id, "failed").await;
    let message = failed["job"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the model folder is missing"),
        "{message}"
    );
    assert!(
        message.contains("boom: the model folder is missing"),
        "{message}"
    );
}

#[tokio::test]
async fn a_trainer_that_ignores_stop_is_killed_after_the_timeout() {
    let h = harness().await;
    h.dataset("clips").await;
    h.run_queue();
    let id = create(&h, "stubborn_job", "0", true).await;
    let running = h.wait_state(id, "running").await;
    let pid = running["job"]["pid"].as_i64().unwrap();
    h.post(&format!("/api/jobs/{id}/stop"), json!({})).await;
    let stopped = h.wait_state(id, "stopped").await;
    assert!(
        stopped["job"]["message"]
            .as_str()
            .unwrap()
            .contains("before the trainer reported it"),
        "{stopped}"
    );
    assert!(!wanlora_server::process::is_alive(pid));
}

#[tokio::test]
async fn edit_clone_and_delete() {
    let h = harness().await;
    h.dataset("clips").await;
    let id = create(&h, "editable", "0", false).await;
    let folder = h.data.join("datasets/clips").display().to_string();
    // Edit: new GPU and steps.
    let yaml = job_yaml("editable", &folder).replace("steps: 4", "steps: 9");
    let r = h
        .call(
            Method::PUT,
            &format!("/api/jobs/{id}"),
            Some(json!({ "yaml": yaml, "gpu": "1" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    assert_eq!(r.json()["job"]["total_steps"], 9);
    assert_eq!(r.json()["job"]["gpu"], "1");
    assert_eq!(r.json()["job"]["state"], "ready");
    // An invalid edit reports its findings.
    let bad = job_yaml("editable", &folder).replace("steps: 4", "steps: 0");
    let r = h
        .call(
            Method::PUT,
            &format!("/api/jobs/{id}"),
            Some(json!({ "yaml": bad, "gpu": "1" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == "config.process.0.train.steps"));
    // Clone: a new job, named _copy, with the same settings.
    let r = h.post(&format!("/api/jobs/{id}/clone"), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.error());
    let copy = r.json()["job"].clone();
    assert_eq!(copy["name"], "editable_copy");
    assert_eq!(copy["state"], "ready");
    assert!(copy["config_yaml"]
        .as_str()
        .unwrap()
        .contains("name: editable_copy"));
    assert!(copy["config_yaml"].as_str().unwrap().contains("steps: 9"));
    let r = h.post(&format!("/api/jobs/{id}/clone"), json!({})).await;
    assert_eq!(r.json()["job"]["name"], "editable_copy2");
    let r = h
        .post(
            &format!("/api/jobs/{id}/clone"),
            json!({ "name": "editable_copy" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .post(&format!("/api/jobs/{id}/clone"), json!({ "name": "../x" }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Duplicate names are refused at creation.
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": job_yaml("editable", &folder), "gpu": "0" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Delete: refused while running, then removes the job and its folder.
    h.run_queue();
    let slow = create(&h, "slow_delete", "0", true).await;
    h.wait_state(slow, "running").await;
    let r = h
        .call(Method::DELETE, &format!("/api/jobs/{slow}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .call(
            Method::PUT,
            &format!("/api/jobs/{slow}"),
            Some(json!({ "yaml": job_yaml("slow_delete", &folder), "gpu": "0" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The dataset a running job uses cannot be deleted either.
    assert_eq!(
        h.call(Method::DELETE, "/api/datasets/clips", None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        h.call(Method::DELETE, "/api/datasets/clips/files/clip.mp4", None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    h.post(&format!("/api/jobs/{slow}/stop"), json!({})).await;
    h.wait_state(slow, "stopped").await;
    assert!(h.job_dir("slow_delete").is_dir());
    // Renaming a job that has an output folder is refused.
    let r = h
        .call(
            Method::PUT,
            &format!("/api/jobs/{slow}"),
            Some(json!({ "yaml": job_yaml("renamed", &folder), "gpu": "0" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .call(Method::DELETE, &format!("/api/jobs/{slow}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!h.job_dir("slow_delete").exists());
    assert_eq!(
        h.get(&format!("/api/jobs/{slow}")).await.status,
        StatusCode::NOT_FOUND
    );
    for (method, uri) in [
        (Method::POST, "/api/jobs/999/start"),
        (Method::POST, "/api/jobs/999/stop"),
        (Method::POST, "/api/jobs/999/clone"),
        (Method::DELETE, "/api/jobs/999"),
        (Method::GET, "/api/jobs/999/metrics"),
        (Method::GET, "/api/jobs/999/log"),
        (Method::GET, "/api/jobs/999/events"),
        (Method::GET, "/api/jobs/999/files/log.txt"),
    ] {
        let r = h.call(method.clone(), uri, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}");
    }
    assert_eq!(h.get("/api/jobs/abc").await.status, StatusCode::BAD_REQUEST);
    // Save-and-start from the edit form queues the job; deleting a queued job takes it out. A running
    // job holds GPU 7, so the queue cannot start the new one before it is deleted.
    let blocker = create(&h, "slow_blocker", "7", true).await;
    h.wait_state(blocker, "running").await;
    let queued = create(&h, "queued_delete", "7", false).await;
    let r = h
        .call(
            Method::PUT,
            &format!("/api/jobs/{queued}"),
            Some(json!({ "yaml": job_yaml("queued_delete", &folder), "gpu": "7", "start": true })),
        )
        .await;
    assert_eq!(r.json()["job"]["state"], "queued", "{}", r.json());
    let r = h
        .call(
            Method::DELETE,
            &format!("/api/jobs/{queued}?keep_files=true"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    h.post(&format!("/api/jobs/{blocker}/stop"), json!({}))
        .await;
    h.wait_state(blocker, "stopped").await;
}

#[tokio::test]
async fn queued_jobs_leave_the_queue_on_stop() {
    let h = harness().await;
    h.dataset("clips").await;
    let id = create(&h, "waiting", "3", true).await;
    let r = h.post(&format!("/api/jobs/{id}/stop"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["job"]["state"], "stopped");
    assert_eq!(r.json()["job"]["queue_position"], Value::Null);
}

/// Reads server-sent events until `until` returns true for the events seen (or 20 s pass).
async fn read_events(
    h: &Harness,
    uri: &str,
    until: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let req = Request::builder()
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8675")
        .body(Body::empty())
        .unwrap();
    let response = h.app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(&events) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events arrive in time")
            .expect("the stream stays open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    name = n.trim().to_string();
                }
                if let Some(d) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    data.push_str(d);
                }
            }
            if !name.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    events
}

#[tokio::test]
async fn live_events_push_status_metrics_log_samples_and_checkpoints() {
    let h = harness().await;
    h.dataset("clips").await;
    let id = create(&h, "live_job", "0", false).await;
    let uri = format!("/api/jobs/{id}/events");
    // Before it runs: the first batch has the job and empty lists.
    let first = read_events(&h, &uri, |e| e.iter().any(|(n, _)| n == "job")).await;
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["metrics", "log", "samples", "checkpoints", "job"]);
    assert_eq!(first[4].1["job"]["state"], "ready");
    h.run_queue();
    h.post(&format!("/api/jobs/{id}/start"), json!({})).await;
    let events = read_events(&h, &uri, |e| {
        e.iter()
            .any(|(n, v)| n == "job" && v["job"]["state"] == "completed")
    })
    .await;
    let mut steps: Vec<i64> = events
        .iter()
        .filter(|(n, _)| n == "metrics")
        .flat_map(|(_, v)| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|m| m["step"].as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    steps.sort();
    steps.dedup();
    assert_eq!(steps, [1, 2, 3, 4]);
    let log: Vec<String> = events
        .iter()
        .filter(|(n, _)| n == "log")
        .flat_map(|(_, v)| {
            v["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(log.iter().any(|l| l == "step 4"), "{log:?}");
    let samples = events.iter().rev().find(|(n, _)| n == "samples").unwrap();
    assert_eq!(samples.1[0]["video"], "samples/000000002_0.mp4");
    let checkpoints = events
        .iter()
        .rev()
        .find(|(n, _)| n == "checkpoints")
        .unwrap();
    assert_eq!(checkpoints.1[0]["step"], 4);
    assert!(events
        .iter()
        .any(|(n, v)| n == "job" && v["status"]["state"] == "training"));
}

#[tokio::test]
async fn restarting_the_ui_adopts_live_trainers_and_fails_vanished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trainer = fake_trainer(dir.path());
    let first = wanlora_server::App::open(&config(&data, None, trainer.clone()))
        .await
        .unwrap();
    let h = Harness {
        app: first,
        data: data.canonicalize().unwrap(),
        dir,
    };
    h.dataset("clips").await;
    let live = create(&h, "slow_survivor", "0", true).await;
    let gone = create(&h, "slow_victim", "1", true).await;
    h.app.supervisor.tick().await.unwrap();
    let live_pid = h.wait_state(live, "running").await["job"]["pid"]
        .as_i64()
        .unwrap();
    let gone_pid = h.wait_state(gone, "running").await["job"]["pid"]
        .as_i64()
        .unwrap();
    // The trainer leads its own session: it does not share the UI's process group.
    assert_ne!(unsafe { libc::getpgid(live_pid as i32) }, unsafe {
        libc::getpgid(0)
    });
    // The victim dies while "the UI is down" (once it has logged something).
    for _ in 0..200 {
        let log = std::fs::read_to_string(h.job_dir("slow_victim").join("log.txt")).unwrap();
        if log.contains("step 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wanlora_server::process::kill_group(gone_pid).unwrap();
    for _ in 0..100 {
        if !wanlora_server::process::is_alive(gone_pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second UI on the same data folder.
    let second = wanlora_server::App::open(&config(&h.data, None, trainer))
        .await
        .unwrap();
    let h2 = Harness {
        app: second,
        data: h.data.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let failed = h2.get(&format!("/api/jobs/{gone}")).await.json();
    assert_eq!(failed["job"]["state"], "failed", "{failed}");
    let message = failed["job"]["message"].as_str().unwrap();
    // (Here the first UI still runs in this test process and may record the exit itself.)
    assert!(message.contains("without reporting an end"), "{message}");
    assert!(
        message.contains("fake trainer for slow_victim"),
        "{message}"
    );
    let adopted = h2.get(&format!("/api/jobs/{live}")).await.json();
    assert_eq!(adopted["job"]["state"], "running");
    assert_eq!(adopted["job"]["pid"], live_pid);
    assert_eq!(adopted["status"]["state"], "training");
    // The adopted trainer is still controlled: stop reaches it.
    h2.run_queue();
    h2.post(&format!("/api/jobs/{live}/stop"), json!({})).await;
    h2.wait_state(live, "stopped").await;
    assert!(!wanlora_server::process::is_alive(live_pid));
}

#[tokio::test]
async fn a_missing_trainer_program_fails_the_job_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trainer = wanlora_server::TrainerCommand {
        program: dir.path().join("no-such-wanlora"),
        args: vec!["train".into()],
    };
    let app = wanlora_server::App::open(&config(&data, None, trainer))
        .await
        .unwrap();
    let h = Harness {
        app,
        data: data.canonicalize().unwrap(),
        dir,
    };
    h.dataset("clips").await;
    let id = create(&h, "no_trainer", "0", true).await;
    h.app.supervisor.tick().await.unwrap();
    let failed = h.wait_state(id, "failed").await;
    assert!(
        failed["job"]["message"]
            .as_str()
            .unwrap()
            .contains("could not start"),
        "{failed}"
    );
}

#[tokio::test]
async fn a_job_training_both_experts_takes_an_even_number_of_gpus() {
    let h = harness().await;
    h.dataset("clips").await;
    let folder = h.data.join("datasets/clips").display().to_string();
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": job_yaml("three_gpus", &folder), "gpu": "0,1,2" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json());
    let finding = &r.json()["findings"][0];
    assert_eq!(finding["path"], "gpu");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message.contains("gpu \"0,1,2\"") && message.contains("3 GPUs for two experts"),
        "{message}"
    );
    assert!(finding["hint"].as_str().unwrap().contains("even number"));
    // Four GPUs: two per expert.
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": job_yaml("four_gpus", &folder), "gpu": "0,1,2,3" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
}

#[tokio::test]
async fn job_bodies_are_validated() {
    let h = harness().await;
    h.dataset("clips").await;
    let r = h
        .post("/api/jobs", json!({ "yaml": "job: [unclosed", "gpu": "0" }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["findings"][0]["line"].is_number(), "{}", r.json());
    let r = h.post("/api/jobs", json!({ "gpu": "0" })).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": "", "gpu": "0", "surprise": 1 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h.call(Method::POST, "/api/jobs", None).await;
    assert!(r.status.is_client_error());
}

#[tokio::test]
async fn event_streams_end_when_the_server_shuts_down() {
    let h = harness().await;
    h.dataset("clips").await;
    let id = create(&h, "shutdown_job", "0", false).await;
    let req = Request::builder()
        .uri(format!("/api/jobs/{id}/events"))
        .header(header::HOST, "127.0.0.1:8675")
        .body(Body::empty())
        .unwrap();
    let mut body = h.app.router.clone().oneshot(req).await.unwrap().into_body();
    // The first batch arrives, then the stream waits for changes.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap();
    assert!(first.is_some());
    h.app.shutdown.send(true).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the event stream stayed open after shutdown");
}
