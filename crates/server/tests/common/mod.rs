//! Test harness: a UI on a temporary data folder, driven through its router, with a stand-in
//! trainer (a shell script that follows the job-folder contract of docs/JOB-FOLDER.md).

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tower::ServiceExt;
use wanlora_server::{App, ServerConfig, TrainerCommand};

/// A stand-in for `wanlora train`: it runs in the job folder, writes status.json, metrics.jsonl,
/// a sample and checkpoints, honours control/stop, control/save_now, control/sample_now and
/// SIGINT, and resumes from its last step. The job name picks a behaviour: `crash` exits with an
/// error, `stubborn` ignores stop requests, `slow` takes many steps.
pub const FAKE_TRAINER: &str = r#"#!/bin/sh
yaml="$1"
name=$(sed -n 's/^  name: *//p' "$yaml" | head -n 1)
total=4; delay=0.1
# Long enough for the stop tests, short enough not to linger if a test fails midway.
case "$name" in *slow*|*stubborn*) total=600 ;; esac
step=0
[ -f state/step ] && step=$(cat state/step)
status() {
  printf '{"state":"%s","step":%s,"total_steps":%s,"expert":"high_noise","seconds_per_step":0.1,"eta_seconds":1,"message":"fake","pid":%s,"updated":"now","error":%s}\n' \
    "$1" "$step" "$total" "$$" "$2" > status.json.tmp
  mv status.json.tmp status.json
}
save() { mkdir -p state; echo "$step" > state/step; : > "${name}_$(printf %09d "$step")_high_noise.safetensors"; }
finish() { save; status "$1" null; rm -f pid; exit 0; }
echo "fake trainer for $name from step $step"
case "$name" in *crash*) echo "loading model"; echo "boom: the model folder is missing"; status failed '"the model folder is missing"'; exit 3 ;; esac
case "$name" in *stubborn*) trap '' INT ;; *) trap 'finish stopped' INT ;; esac
mkdir -p samples
while [ "$step" -lt "$total" ]; do
  step=$((step + 1))
  printf '{"step":%s,"expert":"high_noise","loss":%s,"lr":0.0001}\n' "$step" "0.$((90 - step % 50))" >> metrics.jsonl
  echo "step $step"
  status training null
  if [ "$step" -eq 2 ] || [ -f control/sample_now ]; then
    rm -f control/sample_now
    printf '\000\000\000\040ftypisom' > "samples/$(printf %09d "$step")_0.mp4"
  fi
  if [ -f control/save_now ]; then rm -f control/save_now; save; fi
  case "$name" in *stubborn*) ;; *) if [ -f control/stop ]; then rm -f control/stop; finish stopped; fi ;; esac
  sleep "$delay"
done
finish completed
"#;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub app: App,
    pub data: PathBuf,
}

pub fn fake_trainer(dir: &Path) -> TrainerCommand {
    let script = dir.join("fake-trainer.sh");
    std::fs::write(&script, FAKE_TRAINER).unwrap();
    TrainerCommand {
        program: "/bin/sh".into(),
        args: vec![script.into_os_string()],
    }
}

pub fn config(data: &Path, token: Option<&str>, trainer: TrainerCommand) -> ServerConfig {
    ServerConfig {
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        data_dir: data.to_path_buf(),
        auth_token: token.map(str::to_string),
        max_upload_bytes: 64 * 1024,
        trainer,
        stop_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
    }
}

pub async fn harness_with(token: Option<&str>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trainer = fake_trainer(dir.path());
    let app = App::open(&config(&data, token, trainer)).await.unwrap();
    let data = app.state.dirs.root.clone();
    Harness { dir, app, data }
}

pub async fn harness() -> Harness {
    harness_with(None).await
}

/// A response: status, headers and body (JSON when it parses).
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

impl Harness {
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "127.0.0.1:8675");
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    /// Multipart upload of (file name, bytes) parts.
    pub async fn upload(&self, uri: &str, files: &[(&str, &[u8])]) -> Reply {
        let (content_type, body) = multipart(files);
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, "127.0.0.1:8675")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// Creates job `name` on `gpu` training on dataset `clips` (made by [`Harness::dataset`]),
    /// queued when `start`; its id.
    pub async fn create_job(&self, name: &str, gpu: &str, start: bool) -> i64 {
        let folder = self.data.join("datasets/clips").display().to_string();
        let r = self
            .post(
                "/api/jobs",
                serde_json::json!({ "yaml": job_yaml(name, &folder), "gpu": gpu, "start": start }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.error());
        r.json()["job"]["id"].as_i64().unwrap()
    }

    pub fn job_dir(&self, name: &str) -> PathBuf {
        self.data.join("output").join(name)
    }

    /// Creates dataset `name` holding one clip and its caption.
    pub async fn dataset(&self, name: &str) -> String {
        assert_eq!(
            self.post("/api/datasets", serde_json::json!({ "name": name }))
                .await
                .status,
            StatusCode::CREATED
        );
        let r = self
            .upload(
                &format!("/api/datasets/{name}/upload"),
                &[("clip.mp4", MP4), ("clip.txt", b"a cube turns")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.error());
        // The start frame that `job_yaml` names for its sample prompt.
        std::fs::write(self.data.join("uploads/start.png"), PNG).unwrap();
        self.data.join("datasets").join(name).display().to_string()
    }

    /// Runs the queue loop in the background (as `serve` does).
    pub fn run_queue(&self) {
        tokio::spawn(self.app.supervisor.clone().run(Duration::from_millis(50)));
    }

    /// The job record, polled until `state` (or panics after 20 s).
    pub async fn wait_state(&self, id: i64, state: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get(&format!("/api/jobs/{id}")).await;
            let v = r.json();
            // A claimed job is `running` a moment before its trainer's pid is recorded: tests that
            // look at the process wait for both.
            let started = state != "running" || v["job"]["pid"].is_number();
            if v["job"]["state"] == state && started {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} never reached {state}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The smallest bytes that pass as an MP4 (an ftyp box header).
pub const MP4: &[u8] = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2mp41";
/// A complete 1×1 RGBA PNG.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\0\x01\0\0\x05\0\x01\r\n-\xb4\0\0\0\0IEND\xaeB`\x82";

pub fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "wanloraTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A job YAML training on `dataset_folder` (`<data>/datasets/<name>`), its sample starting from
/// `<data>/uploads/start.png`.
pub fn job_yaml(name: &str, dataset_folder: &str) -> String {
    let data = Path::new(dataset_folder)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let start_frame = data.join("uploads/start.png").display().to_string();
    format!(
        "job: extension
config:
  name: {name}
  process:
    - type: sd_trainer
      training_folder: output
      device: cuda
      network: {{type: lora, linear: 16, linear_alpha: 16}}
      save: {{dtype: bf16, save_every: 2, max_step_saves_to_keep: 4}}
      datasets:
        - folder_path: {dataset_folder}
          caption_ext: txt
          num_frames: 41
          resolution: [512]
      train: {{batch_size: 1, steps: 4, lr: 0.0001, optimizer: adamw8bit}}
      model:
        name_or_path: /models/wan22-i2v
        arch: wan22_14b_i2v
        quantize: true
        qtype: float8
        low_vram: true
      sample:
        sample_every: 2
        width: 512
        height: 512
        num_frames: 41
        fps: 16
        samples:
          - prompt: a cube turns
            ctrl_img: {start_frame}
meta: {{name: '[name]', version: '1.0'}}
"
    )
}
