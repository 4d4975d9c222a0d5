//! Test helpers shared by several test binaries (each uses a part, hence `dead_code` allowed):
//! a hand-written safetensors writer, tiny Wan-shaped models, and a local HTTP server that
//! answers like the Hugging Face hub (API listing, resolve with LFS redirect, Range, ETags).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// safetensors files

/// One tensor to write: name, safetensors dtype, shape.
pub type Spec<'a> = (&'a str, &'a str, Vec<u64>);

fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "U8" | "I8" | "BOOL" => 1,
        "F64" | "I64" | "U64" => 8,
        other => panic!("test writer does not know dtype {other}"),
    }
}

/// A safetensors file's bytes; tensor data is a deterministic pseudo-random fill from `seed`.
pub fn safetensors_bytes(tensors: &[Spec], seed: u64) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let size = dtype_bytes(dtype) * shape.iter().product::<u64>();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}),
        );
        offset += size;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..offset {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push((state >> 33) as u8);
    }
    out
}

pub fn write_safetensors(path: &Path, tensors: &[Spec], seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, safetensors_bytes(tensors, seed)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tiny models with the architecture of Wan 2.2 I2V A14B (names and channel layout), tiny widths.

pub const TINY_DIM: u64 = 8;
/// Wide enough that a shard is ~0.5 MB, so a download can be cut in the middle.
pub const TINY_FFN: u64 = 16384;

/// A Wan transformer in original (ComfyUI) names: `in_channels` input, 16 output channels.
pub fn tiny_expert_original(
    prefix: &str,
    dim: u64,
    in_channels: u64,
    layers: u64,
) -> Vec<(String, &'static str, Vec<u64>)> {
    let mut v = vec![
        (
            format!("{prefix}patch_embedding.weight"),
            "BF16",
            vec![dim, in_channels, 1, 2, 2],
        ),
        (format!("{prefix}patch_embedding.bias"), "BF16", vec![dim]),
        (
            format!("{prefix}text_embedding.0.weight"),
            "BF16",
            vec![dim, 16],
        ),
        (format!("{prefix}head.head.weight"), "BF16", vec![64, dim]),
        (format!("{prefix}head.modulation"), "F32", vec![1, 2, dim]),
    ];
    for i in 0..layers {
        v.push((
            format!("{prefix}blocks.{i}.self_attn.q.weight"),
            "BF16",
            vec![dim, dim],
        ));
        v.push((
            format!("{prefix}blocks.{i}.ffn.0.weight"),
            "BF16",
            vec![32, dim],
        ));
        v.push((
            format!("{prefix}blocks.{i}.modulation"),
            "F32",
            vec![1, 6, dim],
        ));
    }
    v
}

/// The same in diffusers names, split into two shards (the second one large).
pub fn tiny_expert_diffusers_shards() -> [Vec<(String, &'static str, Vec<u64>)>; 2] {
    let d = TINY_DIM;
    let first = vec![
        (
            "patch_embedding.weight".to_string(),
            "BF16",
            vec![d, 36, 1, 2, 2],
        ),
        (
            "condition_embedder.text_embedder.linear_1.weight".into(),
            "BF16",
            vec![d, 16],
        ),
        ("proj_out.weight".into(), "BF16", vec![64, d]),
        ("scale_shift_table".into(), "F32", vec![1, 2, d]),
        ("blocks.0.attn1.to_q.weight".into(), "BF16", vec![d, d]),
    ];
    let second = vec![
        (
            "blocks.0.ffn.net.0.proj.weight".to_string(),
            "F32",
            vec![TINY_FFN, d],
        ),
        ("blocks.1.attn1.to_q.weight".into(), "BF16", vec![d, d]),
    ];
    [first, second]
}

/// A tiny umT5 encoder in transformers names: every layer has its own position bias.
pub fn tiny_umt5(layers: u64, bias_in_every_layer: bool) -> Vec<(String, &'static str, Vec<u64>)> {
    let mut v = vec![
        ("shared.weight".to_string(), "BF16", vec![64, 16]),
        ("encoder.final_layer_norm.weight".into(), "BF16", vec![16]),
    ];
    for i in 0..layers {
        v.push((
            format!("encoder.block.{i}.layer.0.SelfAttention.q.weight"),
            "BF16",
            vec![16, 16],
        ));
        if bias_in_every_layer || i == 0 {
            v.push((
                format!("encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"),
                "BF16",
                vec![32, 2],
            ));
        }
    }
    v
}

/// A tiny Wan video VAE in original names with latent width `z_dim`.
pub fn tiny_vae_original(z_dim: u64) -> Vec<(String, &'static str, Vec<u64>)> {
    vec![
        (
            "encoder.conv1.weight".to_string(),
            "F32",
            vec![4, 3, 3, 3, 3],
        ),
        (
            "conv1.weight".into(),
            "F32",
            vec![2 * z_dim, 2 * z_dim, 1, 1, 1],
        ),
        ("conv2.weight".into(), "F32", vec![z_dim, z_dim, 1, 1, 1]),
        (
            "decoder.conv1.weight".into(),
            "F32",
            vec![4, z_dim, 3, 3, 3],
        ),
    ]
}

/// The same VAE in diffusers names.
pub fn tiny_vae_diffusers() -> Vec<(String, &'static str, Vec<u64>)> {
    vec![
        (
            "encoder.conv_in.weight".to_string(),
            "F32",
            vec![4, 3, 3, 3, 3],
        ),
        ("quant_conv.weight".into(), "F32", vec![32, 32, 1, 1, 1]),
        (
            "post_quant_conv.weight".into(),
            "F32",
            vec![16, 16, 1, 1, 1],
        ),
    ]
}

pub fn as_specs<'a>(v: &'a [(String, &'static str, Vec<u64>)]) -> Vec<Spec<'a>> {
    v.iter()
        .map(|(n, d, s)| (n.as_str(), *d, s.clone()))
        .collect()
}

/// A small Unigram `tokenizer.json` of `pieces` pieces (the shape the `tokenizers` crate reads).
pub fn tokenizer_json(pieces: usize) -> Vec<u8> {
    let vocab: Vec<serde_json::Value> = (0..pieces)
        .map(|i| serde_json::json!([format!("▁p{i}"), -(i as f64)]))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0",
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false}
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A fake hub

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn git_blob_sha1(bytes: &[u8]) -> String {
    use sha1::{Digest as _, Sha1};
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

#[derive(Clone)]
pub struct FakeFile {
    pub path: String,
    pub bytes: Vec<u8>,
    /// Stored in LFS: resolve redirects to `/lfs/<sha256>` and the ETag is the sha256.
    pub lfs: bool,
}

impl FakeFile {
    pub fn lfs(path: &str, bytes: Vec<u8>) -> FakeFile {
        FakeFile {
            path: path.into(),
            bytes,
            lfs: true,
        }
    }
    pub fn git(path: &str, bytes: Vec<u8>) -> FakeFile {
        FakeFile {
            path: path.into(),
            bytes,
            lfs: false,
        }
    }
    pub fn etag(&self) -> String {
        if self.lfs {
            sha256_hex(&self.bytes)
        } else {
            git_blob_sha1(&self.bytes)
        }
    }
}

#[derive(Clone)]
pub struct FakeRepo {
    pub id: String,
    pub commit: String,
    pub files: Vec<FakeFile>,
    /// Downloads need `Authorization: Bearer <FakeHub::TOKEN>`; the listing stays public.
    pub gated: bool,
}

impl FakeRepo {
    pub fn file(&self, path: &str) -> &FakeFile {
        self.files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"))
    }
}

/// The tiny I2V pipeline in diffusers layout, plus files a job must never download.
pub fn tiny_pipeline_repo(id: &str) -> FakeRepo {
    let [s1, s2] = tiny_expert_diffusers_shards();
    let mut files = vec![
        FakeFile::git("README.md", b"# tiny test model\n".to_vec()),
        FakeFile::git(".gitattributes", b"*.safetensors filter=lfs\n".to_vec()),
        FakeFile::git(
            "model_index.json",
            br#"{"_class_name":"WanImageToVideoPipeline"}"#.to_vec(),
        ),
        FakeFile::git(
            "scheduler/scheduler_config.json",
            br#"{"flow_shift":3.0}"#.to_vec(),
        ),
    ];
    for (folder, seed) in [("transformer", 1u64), ("transformer_2", 2)] {
        let shard1 = safetensors_bytes(&as_specs(&s1), seed * 10 + 1);
        let shard2 = safetensors_bytes(&as_specs(&s2), seed * 10 + 2);
        let mut weight_map = BTreeMap::new();
        for (n, _, _) in &s1 {
            weight_map.insert(
                n.clone(),
                "diffusion_pytorch_model-00001-of-00002.safetensors",
            );
        }
        for (n, _, _) in &s2 {
            weight_map.insert(
                n.clone(),
                "diffusion_pytorch_model-00002-of-00002.safetensors",
            );
        }
        let index = serde_json::to_vec(
            &serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map}),
        )
        .unwrap();
        files.push(FakeFile::git(
            &format!("{folder}/config.json"),
            br#"{"in_channels":36}"#.to_vec(),
        ));
        files.push(FakeFile::git(
            &format!("{folder}/diffusion_pytorch_model.safetensors.index.json"),
            index,
        ));
        files.push(FakeFile::lfs(
            &format!("{folder}/diffusion_pytorch_model-00001-of-00002.safetensors"),
            shard1,
        ));
        files.push(FakeFile::lfs(
            &format!("{folder}/diffusion_pytorch_model-00002-of-00002.safetensors"),
            shard2,
        ));
    }
    files.push(FakeFile::git(
        "text_encoder/config.json",
        br#"{"d_model":16}"#.to_vec(),
    ));
    files.push(FakeFile::lfs(
        "text_encoder/model.safetensors",
        safetensors_bytes(&as_specs(&tiny_umt5(2, true)), 3),
    ));
    files.push(FakeFile::lfs(
        "tokenizer/tokenizer.json",
        tokenizer_json(50),
    ));
    files.push(FakeFile::git(
        "tokenizer/tokenizer_config.json",
        b"{}".to_vec(),
    ));
    files.push(FakeFile::git(
        "tokenizer/special_tokens_map.json",
        b"{}".to_vec(),
    ));
    files.push(FakeFile::git(
        "vae/config.json",
        br#"{"z_dim":16}"#.to_vec(),
    ));
    files.push(FakeFile::lfs(
        "vae/diffusion_pytorch_model.safetensors",
        safetensors_bytes(&as_specs(&tiny_vae_diffusers()), 4),
    ));
    FakeRepo {
        id: id.into(),
        commit: "1111111111111111111111111111111111111111".into(),
        files,
        gated: false,
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

impl Seen {
    /// A GET that transfers a file from some offset to its end (not a bounded header read).
    pub fn is_transfer(&self) -> bool {
        self.method == "GET" && self.range.as_deref().is_none_or(|r| r.ends_with('-'))
    }
}

#[derive(Default)]
struct HubState {
    repos: Vec<FakeRepo>,
    /// LFS sha256s whose next transfer is cut after half the body.
    cut_once: HashSet<String>,
    /// LFS sha256s served with one byte flipped.
    corrupt: HashSet<String>,
    seen: Vec<Seen>,
}

pub struct FakeHub {
    pub url: String,
    pub storage_url: String,
    state: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeHub {
    pub const TOKEN: &'static str = "hf_test_token";

    /// Serves `repos` until dropped: the hub on 127.0.0.1, and the LFS storage it redirects to on
    /// 127.0.0.2 (another host, as the real hub's CDN is, so clients stop at the redirect).
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage = TcpListener::bind("127.0.0.2:0").unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let storage_url = format!("http://{}", storage.local_addr().unwrap());
        let state = Arc::new(Mutex::new(HubState {
            repos,
            ..HubState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = |listener: TcpListener| {
            let (state, stop, storage_url) = (state.clone(), stop.clone(), storage_url.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, storage_url) = (state.clone(), storage_url.clone());
                    std::thread::spawn(move || serve(conn, &state, &storage_url));
                }
            })
        };
        let threads = vec![accept(hub), accept(storage)];
        FakeHub {
            url,
            storage_url,
            state,
            stop,
            threads,
        }
    }

    /// The next download of this file stops after half of it, once.
    pub fn cut_connection_once(&self, file: &FakeFile) {
        self.state
            .lock()
            .unwrap()
            .cut_once
            .insert(sha256_hex(&file.bytes));
    }

    /// This file is served with one byte changed, every time.
    pub fn corrupt(&self, file: &FakeFile) {
        self.state
            .lock()
            .unwrap()
            .corrupt
            .insert(sha256_hex(&file.bytes));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loops so they see the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        let _ = TcpStream::connect(self.storage_url.trim_start_matches("http://"));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (a cut connection).
    cut_at: Option<usize>,
}

impl Reply {
    fn new(status: &'static str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_at: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn error(status: &'static str, code: &str, message: &str) -> Reply {
        Reply::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
    }
}

fn serve(conn: TcpStream, state: &Mutex<HubState>, storage: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    let reply = {
        let mut st = state.lock().unwrap();
        st.seen.push(seen.clone());
        route(&mut st, &seen, storage)
    };
    let head_only = method == "HEAD";
    let mut out = conn;
    let mut text = format!("HTTP/1.1 {}\r\n", reply.status);
    let has_length = reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in &reply.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        text.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    let _ = out.write_all(text.as_bytes());
    if !head_only {
        let end = reply.cut_at.unwrap_or(reply.body.len());
        let _ = out.write_all(&reply.body[..end]);
    }
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// Applies a `Range: bytes=N-` or `bytes=N-M` header to a full body.
fn ranged(reply: Reply, bytes: &[u8], range: Option<&str>) -> Reply {
    let bounds = range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| {
        let (from, to) = r.split_once('-')?;
        let from: usize = from.parse().ok()?;
        let to: usize = if to.is_empty() {
            bytes.len().saturating_sub(1)
        } else {
            to.parse().ok()?
        };
        Some((from, to.min(bytes.len().saturating_sub(1))))
    });
    match bounds {
        Some((from, to)) if from <= to && from < bytes.len() => {
            let mut r = reply;
            r.status = "206 Partial Content";
            r.body = bytes[from..=to].to_vec();
            r.header(
                "Content-Range",
                format!("bytes {from}-{to}/{}", bytes.len()),
            )
        }
        Some(_) => Reply::new("416 Range Not Satisfiable"),
        None => {
            let mut r = reply;
            r.body = bytes.to_vec();
            r
        }
    }
}

fn route(st: &mut HubState, req: &Seen, storage: &str) -> Reply {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    // GET /api/models/{org}/{name}/revision/{rev}
    if let ["api", "models", org, name, "revision", rev] = segments.as_slice() {
        let id = format!("{org}/{name}");
        let Some(repo) = st.repos.iter().find(|r| r.id == id) else {
            return Reply::error("401 Unauthorized", "RepoNotFound", "Repository not found");
        };
        if *rev != "main" && *rev != repo.commit {
            return Reply::error(
                "404 Not Found",
                "RevisionNotFound",
                &format!("Invalid rev id: {rev}"),
            );
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|f| {
                let mut s = serde_json::json!({"rfilename": f.path, "size": f.bytes.len(), "blobId": git_blob_sha1(&f.bytes)});
                if f.lfs {
                    s["lfs"] = serde_json::json!({"sha256": sha256_hex(&f.bytes), "size": f.bytes.len(), "pointerSize": 134});
                }
                s
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "id": repo.id, "sha": repo.commit, "gated": if repo.gated { serde_json::json!("manual") } else { serde_json::json!(false) },
            "siblings": siblings
        }))
        .unwrap();
        let mut r = Reply::new("200 OK").header("Content-Type", "application/json");
        r.body = body;
        return r;
    }
    // /lfs/{sha256}: the storage host an LFS resolve redirects to.
    if let ["lfs", sha] = segments.as_slice() {
        let Some(file) = st
            .repos
            .iter()
            .flat_map(|r| &r.files)
            .find(|f| f.lfs && sha256_hex(&f.bytes) == *sha)
            .cloned()
        else {
            return Reply::new("404 Not Found");
        };
        let mut bytes = file.bytes.clone();
        if st.corrupt.contains(*sha) {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        let mut reply = ranged(
            Reply::new("200 OK")
                .header("ETag", quoted(sha))
                .header("Accept-Ranges", "bytes"),
            &bytes,
            req.range.as_deref(),
        );
        // Cut a transfer of the file, not a small bounded read of its header.
        let transfer = req.range.as_deref().is_none_or(|r| r.ends_with('-'));
        if req.method == "GET" && transfer && st.cut_once.remove(*sha) {
            reply.cut_at = Some(reply.body.len() / 2);
        }
        return reply;
    }
    // HEAD/GET /{org}/{name}/resolve/{rev}/{path...}
    if let [org, name, "resolve", rev, rest @ ..] = segments.as_slice() {
        let id = format!("{org}/{name}");
        let Some(repo) = st.repos.iter().find(|r| r.id == id) else {
            return Reply::error("401 Unauthorized", "RepoNotFound", "Repository not found");
        };
        if repo.gated && req.authorization.as_deref() != Some(&format!("Bearer {}", FakeHub::TOKEN))
        {
            return Reply::error(
                "401 Unauthorized",
                "GatedRepo",
                &format!("Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."),
            );
        }
        if *rev != "main" && *rev != repo.commit {
            return Reply::error(
                "404 Not Found",
                "RevisionNotFound",
                &format!("Invalid rev id: {rev}"),
            );
        }
        let file_path = rest.join("/");
        let Some(file) = repo.files.iter().find(|f| f.path == file_path) else {
            return Reply::error(
                "404 Not Found",
                "EntryNotFound",
                &format!("{file_path} does not exist"),
            );
        };
        let common = |r: Reply| r.header("X-Repo-Commit", repo.commit.clone());
        if file.lfs {
            let sha = sha256_hex(&file.bytes);
            return common(Reply::new("302 Found"))
                .header("Location", format!("{storage}/lfs/{sha}"))
                .header("X-Linked-Etag", quoted(&sha))
                .header("X-Linked-Size", file.bytes.len().to_string())
                .header("ETag", quoted(&git_blob_sha1(b"pointer")))
                .header("Content-Length", "0");
        }
        let etag = git_blob_sha1(&file.bytes);
        return ranged(
            common(Reply::new("200 OK")).header("ETag", quoted(&etag)),
            &file.bytes,
            req.range.as_deref(),
        );
    }
    Reply::new("404 Not Found")
}

// ---------------------------------------------------------------------------------------------
// Python's huggingface_hub, for cache interoperability

/// The interpreter with `huggingface_hub` 1.x: `$WANLORA_TEST_PYTHON`, else the workspace's
/// `.venv` that `scripts/setup.sh --python` creates. Missing is a failure, not a skip.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("WANLORA_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with huggingface_hub for the cache interoperability test: run `scripts/setup.sh --python` \
         (creates {}) or set WANLORA_TEST_PYTHON",
        venv.display()
    );
    venv
}

/// Runs a Python snippet with extra environment variables; returns stdout, panics with stderr.
pub fn run_python(code: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(python());
    cmd.arg("-c").arg(code).args(args);
    for var in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_TOKEN_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python could not be started");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
