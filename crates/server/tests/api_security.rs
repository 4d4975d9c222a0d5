//! Access control and path confinement, through the HTTP routes.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::*;
use serde_json::json;

const TOKEN: &str = "correct-horse-battery-staple";

fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8675")
}

#[tokio::test]
async fn every_api_route_needs_the_token_when_one_is_set() {
    let h = harness_with(Some(TOKEN)).await;
    let job_routes = [
        (Method::GET, "/api/jobs"),
        (Method::POST, "/api/jobs"),
        (Method::GET, "/api/queue"),
        (Method::GET, "/api/jobs/1"),
        (Method::PUT, "/api/jobs/1"),
        (Method::DELETE, "/api/jobs/1"),
        (Method::POST, "/api/jobs/1/start"),
        (Method::POST, "/api/jobs/1/stop"),
        (Method::POST, "/api/jobs/1/clone"),
        (Method::POST, "/api/jobs/1/save-now"),
        (Method::POST, "/api/jobs/1/sample-now"),
        (Method::GET, "/api/jobs/1/metrics"),
        (Method::GET, "/api/jobs/1/log"),
        (Method::GET, "/api/jobs/1/files/log.txt"),
        (Method::GET, "/api/jobs/1/events"),
        (Method::GET, "/api/system"),
        (Method::GET, "/api/settings"),
        (Method::PUT, "/api/settings"),
        (Method::GET, "/api/presets"),
        (Method::GET, "/api/schema"),
        (Method::POST, "/api/config/parse"),
        (Method::POST, "/api/config/render"),
        (Method::GET, "/api/datasets"),
        (Method::POST, "/api/datasets"),
        (Method::GET, "/api/datasets/d"),
        (Method::DELETE, "/api/datasets/d"),
        (Method::GET, "/api/datasets/d/inspect"),
        (Method::POST, "/api/datasets/d/upload"),
        (Method::GET, "/api/datasets/d/files/a.mp4"),
        (Method::DELETE, "/api/datasets/d/files/a.mp4"),
        (Method::GET, "/api/datasets/d/thumbnails/a.mp4"),
        (Method::PUT, "/api/datasets/d/captions/a.mp4"),
        (Method::POST, "/api/uploads"),
        (Method::GET, "/api/uploads/a.png"),
        (Method::POST, "/api/logout"),
    ];
    for (method, uri) in job_routes {
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic Y29ycmVjdA=="),
            Some(TOKEN),
        ] {
            let mut req = request(method.clone(), uri);
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let r = h.send(req.body(Body::empty()).unwrap()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {auth:?}"
            );
        }
        let wrong_cookie = request(method.clone(), uri)
            .header(header::COOKIE, "wanlora_token=nope")
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.send(wrong_cookie).await.status, StatusCode::UNAUTHORIZED);
    }
    // The right token opens them, as a header or as the cookie that login sets.
    let ok = request(Method::GET, "/api/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(ok).await.status, StatusCode::OK);
    let bad_login = h.post("/api/login", json!({ "token": "guess" })).await;
    assert_eq!(bad_login.status, StatusCode::UNAUTHORIZED);
    assert!(bad_login.headers.get(header::SET_COOKIE).is_none());
    let login = h.post("/api/login", json!({ "token": TOKEN })).await;
    assert_eq!(login.status, StatusCode::OK);
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let with_cookie = request(Method::GET, "/api/system")
        .header(header::COOKIE, cookie.split(';').next().unwrap())
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(with_cookie).await.status, StatusCode::OK);
    // The page itself and the auth probe load without it (the page asks for the token).
    assert_eq!(h.get("/").await.status, StatusCode::OK);
    assert_eq!(h.get("/assets/app.js").await.status, StatusCode::OK);
    let probe = h.get("/api/auth").await;
    assert_eq!(
        probe.json(),
        json!({ "required": true, "authorized": false })
    );
}

/// A login attempt from `client` (as the server's connect info records it).
fn login_from(client: [u8; 4], token: &str) -> Request<Body> {
    let mut req = request(Method::POST, "/api/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "token": token }).to_string()))
        .unwrap();
    let addr = std::net::SocketAddr::from((client, 40000));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

#[tokio::test]
async fn login_is_rate_limited_per_client_address() {
    let h = harness_with(Some(TOKEN)).await;
    let guesser = [192, 168, 1, 66];
    for i in 0..wanlora_server::login_limit::MAX_FAILURES {
        let r = h.send(login_from(guesser, &format!("guess-{i}"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // Over the limit even the right token waits: the limit must not tell a guesser it is right.
    for token in ["guess-again", TOKEN] {
        let r = h.send(login_from(guesser, token)).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{token}");
        let wait: u64 = r.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(r.error().contains("try again in"), "{}", r.error());
        assert!(r.headers.get(header::SET_COOKIE).is_none());
    }
    // Another address still logs in.
    let r = h.send(login_from([192, 168, 1, 7], TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
}

#[tokio::test]
async fn without_a_token_loopback_host_names_only_and_no_cross_site_writes() {
    let h = harness().await;
    assert_eq!(h.get("/api/auth").await.json()["required"], false);
    for host in ["evil.example", "evil.example:8675", "10.0.0.5:8675"] {
        let req = Request::builder()
            .uri("/api/jobs")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            h.send(req).await.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{host}"
        );
    }
    for host in ["localhost:8675", "127.0.0.1:8675", "[::1]:8675"] {
        let req = Request::builder()
            .uri("/api/jobs")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.send(req).await.status, StatusCode::OK, "{host}");
    }
    let cross = request(Method::POST, "/api/datasets")
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    assert_eq!(h.send(cross).await.status, StatusCode::FORBIDDEN);
    assert!(!h.data.join("datasets/x").exists());
    let same = request(Method::POST, "/api/datasets")
        .header(header::ORIGIN, "http://127.0.0.1:8675")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    assert_eq!(h.send(same).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn responses_carry_a_strict_content_security_policy() {
    let h = harness().await;
    let r = h.get("/").await;
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(String::from_utf8_lossy(&r.bytes).contains("<script src=\"/assets/app.js\">"));
}

#[tokio::test]
async fn dataset_names_cannot_leave_the_datasets_folder() {
    let h = harness().await;
    for name in ["..", "../escape", "/tmp/abs", "a/b", ".hidden", ""] {
        let r = h.post("/api/datasets", json!({ "name": name })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name:?}: {}", r.error());
    }
    assert!(!h.data.join("escape").exists());
    assert!(!h.data.parent().unwrap().join("escape").exists());
    // Encoded separators and dots reach the handler as one name and are refused there.
    for uri in [
        "/api/datasets/..",
        "/api/datasets/%2e%2e",
        "/api/datasets/..%2f..%2fetc",
        "/api/datasets/%2Fetc",
        "/api/datasets/..%5c..%5cwindows",
    ] {
        let r = h.get(uri).await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
            "{uri}: {}",
            r.status
        );
        let r = h.call(Method::DELETE, uri, None).await;
        assert!(r.status.is_client_error(), "DELETE {uri}: {}", r.status);
    }
    assert!(h.data.join("datasets").is_dir());
}

#[tokio::test]
async fn dataset_files_cannot_be_reached_by_traversal_or_symlink() {
    let h = harness().await;
    let folder = h.dataset("clips").await;
    let secret = h.dir.path().join("secret.txt");
    std::fs::write(&secret, "do not serve").unwrap();
    std::os::unix::fs::symlink(&secret, std::path::Path::new(&folder).join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&secret, std::path::Path::new(&folder).join("link.mp4")).unwrap();
    for uri in [
        "/api/datasets/clips/files/..%2f..%2fwanlora-ui.sqlite",
        "/api/datasets/clips/files/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/api/datasets/clips/files/%2Fetc%2Fpasswd",
        "/api/datasets/clips/files/link.txt",
        "/api/datasets/clips/files/link.mp4",
        "/api/datasets/clips/thumbnails/link.mp4",
        "/api/datasets/clips/files/clip.sqlite",
    ] {
        let r = h.get(uri).await;
        assert!(r.status.is_client_error(), "{uri}: {}", r.status);
        assert!(
            !String::from_utf8_lossy(&r.bytes).contains("do not serve"),
            "{uri}"
        );
    }
    // Writing a caption through a symlinked caption file replaces the link, never the target.
    std::fs::write(std::path::Path::new(&folder).join("real.mp4"), MP4).unwrap();
    std::os::unix::fs::symlink(&secret, std::path::Path::new(&folder).join("real.txt")).unwrap();
    let r = h
        .call(
            Method::PUT,
            "/api/datasets/clips/captions/real.mp4",
            Some(json!({ "caption": "fine" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "do not serve");
    // Deleting a symlinked media file is refused; its target stays.
    let r = h
        .call(Method::DELETE, "/api/datasets/clips/files/link.mp4", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(secret.exists());
}

#[tokio::test]
async fn uploads_are_checked_by_name_type_content_and_size() {
    let h = harness().await;
    h.dataset("up").await;
    let cases: [(&str, &[u8], StatusCode); 8] = [
        ("../evil.mp4", MP4, StatusCode::BAD_REQUEST),
        ("/etc/cron.d/evil.txt", b"x", StatusCode::BAD_REQUEST),
        (".bashrc", b"x", StatusCode::BAD_REQUEST),
        ("run.sh", b"#!/bin/sh", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("page.html", b"<html>", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "fake.mp4",
            b"#!/bin/sh\necho owned",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("fake.png", MP4, StatusCode::UNPROCESSABLE_ENTITY),
        (
            "binary.txt",
            b"caption\0with nul",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (name, bytes, status) in cases {
        let r = h.upload("/api/datasets/up/upload", &[(name, bytes)]).await;
        assert_eq!(r.status, status, "{name}: {}", r.error());
    }
    let big = vec![0u8; 70 * 1024];
    let mut big_mp4 = MP4.to_vec();
    big_mp4.extend_from_slice(&big);
    let r = h
        .upload("/api/datasets/up/upload", &[("big.mp4", &big_mp4)])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.error());
    let listed = h.get("/api/datasets/up").await.json();
    let files: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["clip.mp4"]);
    // Nothing but the clip and its caption is in the folder: no temporary leftovers.
    let mut on_disk: Vec<String> = std::fs::read_dir(h.data.join("datasets/up"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, ["clip.mp4", "clip.txt"]);
}

fn zip_of(entries: &[(&str, &[u8])], symlink: Option<(&str, &str)>) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts: zip::write::SimpleFileOptions = Default::default();
        for (name, bytes) in entries {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(bytes).unwrap();
        }
        if let Some((name, target)) = symlink {
            zip.add_symlink(name, target, opts).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

#[tokio::test]
async fn zip_archives_unpack_flat_and_refuse_escapes_and_links() {
    let h = harness().await;
    h.dataset("z").await;
    let good = zip_of(
        &[
            ("set/a.mp4", MP4),
            ("set/a.txt", b"caption a"),
            ("__MACOSX/._a.mp4", b"junk"),
            ("b.png", PNG),
        ],
        None,
    );
    let r = h
        .upload("/api/datasets/z/upload", &[("set.zip", &good)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    assert_eq!(r.json()["saved"], json!(["a.mp4", "a.txt", "b.png"]));
    assert!(!h.data.join("datasets/z/set").exists());

    let escape = zip_of(&[("../../escape.txt", b"x")], None);
    let r = h
        .upload("/api/datasets/z/upload", &[("escape.zip", &escape)])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.error());
    assert!(r.error().contains("outside the archive"), "{}", r.error());

    let absolute = zip_of(&[("/tmp/abs.txt", b"x")], None);
    let r = h
        .upload("/api/datasets/z/upload", &[("abs.zip", &absolute)])
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(
        !std::path::Path::new("/tmp/abs.txt").exists()
            || std::fs::read("/tmp/abs.txt").unwrap() != b"x"
    );

    let link = zip_of(&[("ok.txt", b"fine")], Some(("c.mp4", "/etc/passwd")));
    let r = h
        .upload("/api/datasets/z/upload", &[("link.zip", &link)])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.error());
    assert!(r.error().contains("symbolic link"), "{}", r.error());
    assert!(
        !h.data.join("datasets/z/ok.txt").exists(),
        "a refused archive writes nothing"
    );

    let script = zip_of(&[("x.sh", b"#!/bin/sh")], None);
    let r = h
        .upload("/api/datasets/z/upload", &[("script.zip", &script)])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A bomb: small compressed, larger than the limit once unpacked.
    let mut huge = MP4.to_vec();
    huge.extend(std::iter::repeat_n(0u8, 200 * 1024));
    let bomb = zip_of(&[("huge.mp4", &huge)], None);
    assert!(bomb.len() < 64 * 1024);
    let r = h
        .upload("/api/datasets/z/upload", &[("bomb.zip", &bomb)])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.error());
    assert!(!h.data.join("datasets/z/huge.mp4").exists());

    let not_zip = h
        .upload("/api/datasets/z/upload", &[("fake.zip", b"not a zip")])
        .await;
    assert_eq!(not_zip.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn job_files_are_limited_to_outputs() {
    let h = harness().await;
    let folder = h.dataset("clips").await;
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": job_yaml("files_job", &folder), "gpu": "0" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.error());
    let id = r.json()["job"]["id"].as_i64().unwrap();
    let dir = h.job_dir("files_job");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/optimizer.bin"), b"state").unwrap();
    std::fs::write(dir.join("files_job_high_noise.safetensors"), b"lora").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("x.safetensors")).unwrap();
    for rel in [
        "state/optimizer.bin",
        "..%2f..%2fwanlora-ui.sqlite",
        "%2e%2e/%2e%2e/wanlora-ui.sqlite",
        "samples/..%2f..%2f..%2fwanlora-ui.sqlite",
        "x.safetensors",
        "pid",
        "%2Fetc%2Fpasswd",
    ] {
        let r = h.get(&format!("/api/jobs/{id}/files/{rel}")).await;
        assert!(r.status.is_client_error(), "{rel}: {}", r.status);
    }
    let r = h
        .get(&format!(
            "/api/jobs/{id}/files/files_job_high_noise.safetensors?download=true"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes, b"lora");
    assert_eq!(
        r.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"files_job_high_noise.safetensors\""
    );
}

#[tokio::test]
async fn log_and_metrics_routes_refuse_symlinks_like_the_file_routes() {
    let h = harness().await;
    h.dataset("clips").await;
    let id = h.create_job("linked_log", "0", false).await;
    let dir = h.job_dir("linked_log");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = h.dir.path().join("secret.txt");
    std::fs::write(
        &secret,
        "{\"step\":1,\"secret\":\"outside the data folder\"}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("log.txt")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("metrics.jsonl")).unwrap();
    for route in ["log", "files/log.txt", "metrics"] {
        let r = h.get(&format!("/api/jobs/{id}/{route}")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{route}");
        assert!(
            !String::from_utf8_lossy(&r.bytes).contains("outside the data folder"),
            "{route}"
        );
        assert!(
            r.error().contains("symbolic link"),
            "{route}: {}",
            r.error()
        );
    }
}

#[tokio::test]
async fn jobs_may_only_use_folders_of_the_data_folder() {
    let h = harness().await;
    h.dataset("clips").await;
    let outside = h.dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    for folder in [
        outside.display().to_string(),
        format!("{}/datasets/../..", h.data.display()),
        "/etc".to_string(),
        "data/motion".to_string(),
    ] {
        let r = h
            .post(
                "/api/jobs",
                json!({ "yaml": job_yaml("escape", &folder), "gpu": "0" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{folder}");
        let findings = r.json()["findings"].clone();
        assert!(
            findings
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["path"] == "config.process.0.datasets.0.folder_path"),
            "{findings}"
        );
    }
    // The output always goes to the data folder, whatever training_folder says.
    let folder = h.data.join("datasets/clips").display().to_string();
    let yaml =
        job_yaml("confined", &folder).replace("training_folder: output", "training_folder: /tmp");
    let r = h
        .post("/api/jobs", json!({ "yaml": yaml, "gpu": "0" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.error());
    let stored = r.json()["job"]["config_yaml"].as_str().unwrap().to_string();
    assert!(
        stored.contains(&format!(
            "training_folder: {}",
            h.data.join("output").display()
        )),
        "{stored}"
    );
    // Names that are paths are refused.
    for name in ["../up", "a/b", ".hidden"] {
        let r = h
            .post(
                "/api/jobs",
                json!({ "yaml": job_yaml(&format!("'{name}'"), &folder), "gpu": "0" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{name}");
    }
    // The GPU value becomes an environment variable: only index lists pass.
    let r = h
        .post(
            "/api/jobs",
            json!({ "yaml": job_yaml("gpu_job", &folder), "gpu": "0; rm -rf /" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Start frames must be uploads.
    let start_frame = h.data.join("uploads/start.png").display().to_string();
    let yaml = job_yaml("ctrl", &folder).replace(&start_frame, "/etc/passwd");
    let r = h
        .post("/api/jobs", json!({ "yaml": yaml, "gpu": "0" }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == "config.process.0.sample.samples.0.ctrl_img"));
}

#[tokio::test]
async fn control_images_are_images_stored_by_content() {
    let h = harness().await;
    let r = h.upload("/api/uploads", &[("start frame.png", PNG)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    let v = r.json();
    let name = v["name"].as_str().unwrap();
    assert!(name.ends_with(".png") && name.len() == 24, "{name}");
    assert_eq!(
        v["path"].as_str().unwrap(),
        h.data.join("uploads").join(name).display().to_string()
    );
    let again = h.upload("/api/uploads", &[("other name.png", PNG)]).await;
    assert_eq!(again.json()["name"], v["name"]);
    let served = h.get(&format!("/api/uploads/{name}")).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.bytes, PNG);
    assert_eq!(served.headers[header::CONTENT_TYPE], "image/png");
    for (file, bytes, status) in [
        ("clip.mp4", MP4, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "fake.png",
            b"GIF89a" as &[u8],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("../x.png", PNG, StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            h.upload("/api/uploads", &[(file, bytes)]).await.status,
            status,
            "{file}"
        );
    }
    for uri in [
        "/api/uploads/..%2fwanlora-ui.sqlite",
        "/api/uploads/missing.png",
    ] {
        assert!(h.get(uri).await.status.is_client_error(), "{uri}");
    }
    let empty = h.upload("/api/uploads", &[]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
}
