//! From a job's `model.*` keys to the files of each component: local file or folder first, then
//! the Hugging Face cache, then (online) the hub's listing of what would be downloaded.
//! [`fetch`] downloads what a stage of the job needs and nothing else.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cache::RepoCache;
use crate::checks::{check_components_on_hub, CheckFailure, CheckOptions};
use crate::client::{HubClient, RepoInfo};
use crate::config::HubConfig;
use crate::download::{download_all, DownloadRequest};
use crate::error::{bullet_list, human_bytes, Error};
use crate::source::{RepoRef, Source};
use crate::spec::{Candidate, Component, ModelSpec, Need, Stage};
use crate::tree::{expected_files, locate, FileTree, Layout, Located, NotFound};

/// Where a component's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A single file on disk.
    LocalFile(PathBuf),
    /// A folder on disk (a diffusers component folder, or the folder of a set of shards).
    LocalFolder(PathBuf),
    /// A repository snapshot in the Hugging Face cache; `repo.path_in_repo` is the folder or file.
    Cache { repo: RepoRef, commit: String },
    /// A repository on the hub, not (fully) cached yet.
    Hub { repo: RepoRef, commit: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::LocalFile(p) => write!(f, "file {}", p.display()),
            Origin::LocalFolder(p) => write!(f, "folder {}", p.display()),
            Origin::Cache { repo, commit } => {
                write!(
                    f,
                    "HF cache {repo} (commit {})",
                    &commit[..commit.len().min(8)]
                )
            }
            Origin::Hub { repo, commit } => {
                write!(
                    f,
                    "Hugging Face {repo} (commit {})",
                    &commit[..commit.len().min(8)]
                )
            }
        }
    }
}

/// One file of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFile {
    /// Path inside the source (repository or folder root), `/`-separated.
    pub name: String,
    /// Where it is on disk, once it is there.
    pub path: Option<PathBuf>,
    pub size: Option<u64>,
}

/// Whether a component can be loaded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Every file is on disk.
    Ready,
    /// Listed on the hub; `bytes` still to download in `files` files.
    Download { bytes: u64, files: usize },
    /// Not available: which files (exact names where they can be known), why, and what to do.
    Missing {
        files: Vec<String>,
        reason: String,
        fix: String,
    },
    /// The job never loads it.
    NotNeeded,
}

/// One component, located.
#[derive(Debug, Clone)]
pub struct ResolvedComponent {
    pub component: Component,
    pub need: Need,
    /// The job key that named its source, and the value.
    pub key: Option<&'static str>,
    pub value: Option<String>,
    pub origin: Option<Origin>,
    pub layout: Option<Layout>,
    pub files: Vec<ComponentFile>,
    pub state: State,
    pub(crate) downloads: Vec<DownloadRequest>,
}

/// Every component of a job, located.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub components: Vec<ResolvedComponent>,
    pub cache_dir: PathBuf,
    pub endpoint: String,
    pub offline: bool,
}

impl ResolvedComponent {
    fn empty(component: Component, need: Need) -> ResolvedComponent {
        ResolvedComponent {
            component,
            need,
            key: None,
            value: None,
            origin: None,
            layout: None,
            files: Vec::new(),
            state: State::NotNeeded,
            downloads: Vec::new(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Sum of the known file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| f.size).sum()
    }

    /// The safetensors files on disk, shards in order.
    pub fn weight_files(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| f.name.ends_with(".safetensors"))
            .filter_map(|f| f.path.clone())
            .collect()
    }

    /// What `wanlora_torch::weights::WeightSet::open` takes: the single weight file, or the folder
    /// holding the shards and their index. `None` until the files are on disk.
    pub fn weights_path(&self) -> Option<PathBuf> {
        let files = self.weight_files();
        match (self.layout, files.as_slice()) {
            (Some(Layout::SingleFile), [one]) => Some(one.clone()),
            (Some(Layout::Sharded { .. }), [first, ..]) => first.parent().map(Path::to_path_buf),
            _ => None,
        }
    }

    /// The component's `config.json` on disk, when it has one (diffusers folders).
    pub fn config_file(&self) -> Option<PathBuf> {
        self.file_named("config.json")
    }

    /// The shard index on disk, when the component is sharded and has one.
    pub fn index_file(&self) -> Option<PathBuf> {
        self.files
            .iter()
            .find(|f| f.name.ends_with(".safetensors.index.json"))
            .and_then(|f| f.path.clone())
    }

    /// A file of the component by its name (last path part), on disk.
    pub fn file_named(&self, name: &str) -> Option<PathBuf> {
        self.files
            .iter()
            .find(|f| f.name.rsplit('/').next() == Some(name))
            .and_then(|f| f.path.clone())
    }

    /// `model.key: value`, for messages.
    pub fn source_label(&self) -> String {
        match (&self.key, &self.value) {
            (Some(k), Some(v)) => format!("{k}: {v}"),
            _ => "no job key names it".to_string(),
        }
    }
}

impl ResolvedModel {
    pub fn component(&self, component: Component) -> Option<&ResolvedComponent> {
        self.components.iter().find(|c| c.component == component)
    }

    /// Bytes still to download for `stage`.
    pub fn download_bytes(&self, stage: Stage) -> u64 {
        self.components
            .iter()
            .filter(|c| stage.includes(c.need))
            .map(|c| match c.state {
                State::Download { bytes, .. } => bytes,
                _ => 0,
            })
            .sum()
    }

    /// Succeeds when every component `stage` needs is on disk; otherwise names each missing part.
    pub fn require(&self, stage: Stage) -> Result<(), Error> {
        self.unavailable(stage, true)
    }

    /// Names what `stage` needs that is neither on disk nor, unless `count_downloads`, on the hub.
    fn unavailable(&self, stage: Stage, count_downloads: bool) -> Result<(), Error> {
        let mut lines = Vec::new();
        let mut offline_files = Vec::new();
        for c in self.components.iter().filter(|c| stage.includes(c.need)) {
            match &c.state {
                State::Ready | State::NotNeeded => {}
                State::Download { .. } if !count_downloads => {}
                State::Download { bytes, files } => lines.push(format!(
                    "{} ({}): {files} files ({}) still to download; run `wanlora models fetch JOB.yaml`",
                    c.component,
                    c.source_label(),
                    human_bytes(*bytes)
                )),
                State::Missing { files, reason, fix } => {
                    let from_repo = c
                        .value
                        .as_deref()
                        .is_some_and(|v| matches!(Source::parse(v, None), Source::Repo(_)));
                    if self.offline && from_repo && !files.is_empty() {
                        offline_files.extend(files.iter().map(|f| format!("{}: {f}", c.component)));
                        continue;
                    }
                    let mut line = format!("{} ({}): {reason}", c.component, c.source_label());
                    if !files.is_empty() {
                        line.push_str(&format!("\n{}", bullet_list(files)));
                    }
                    if !fix.is_empty() {
                        line.push_str(&format!("\n{fix}"));
                    }
                    lines.push(line);
                }
            }
        }
        if !offline_files.is_empty() {
            offline_files.extend(lines);
            return Err(Error::Offline {
                cache_dir: self.cache_dir.clone(),
                missing: offline_files,
            });
        }
        if lines.is_empty() {
            Ok(())
        } else {
            Err(Error::Missing(lines))
        }
    }
}

/// What to do when nothing names a component, or what is named does not hold it.
fn how_to_get(component: Component) -> String {
    let pipeline = "a Wan 2.2 I2V A14B diffusers folder or repo id such as ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16";
    match component {
        Component::HighNoiseExpert => format!(
            "Set model.name_or_path to {pipeline}, or model.high_noise_model_path to a single file such as ComfyUI's wan2.2_i2v_high_noise_14B_fp16.safetensors (or _fp8_scaled)."
        ),
        Component::LowNoiseExpert => format!(
            "Set model.name_or_path to {pipeline}, or model.low_noise_model_path to a single file such as ComfyUI's wan2.2_i2v_low_noise_14B_fp16.safetensors (or _fp8_scaled)."
        ),
        Component::TextEncoder => format!(
            "Set model.te_name_or_path to umt5_xxl_fp8_e4m3fn_scaled.safetensors (ComfyUI) or a text_encoder/ folder, or model.extras_name_or_path to {pipeline}."
        ),
        Component::Tokenizer => format!(
            "Set model.tokenizer_path to a folder with tokenizer.json (the tokenizer/ folder of a Wan diffusers repository), or model.extras_name_or_path to {pipeline} (only the parts not given by other keys are fetched)."
        ),
        Component::Vae => format!(
            "Set model.vae_path to wan_2.1_vae.safetensors (ComfyUI) or a vae/ folder, or model.extras_name_or_path to {pipeline}."
        ),
    }
}

fn not_found_text(nf: &NotFound, place: &str) -> String {
    match nf {
        NotFound::Nothing { looked_in } => {
            let places: Vec<String> = looked_in
                .iter()
                .map(|f| {
                    if f.is_empty() {
                        "the top folder".to_string()
                    } else {
                        format!("{f}/")
                    }
                })
                .collect();
            format!("not found in {place} (looked in {})", places.join(", "))
        }
        NotFound::Ambiguous { folder, files } => format!(
            "{place}: {} holds several weight files ({}); point the key at one file",
            if folder.is_empty() {
                "the top folder".to_string()
            } else {
                format!("{folder}/")
            },
            files.join(", ")
        ),
        NotFound::Unsupported { path, reason } => format!("{place}: {path} is {reason}"),
    }
}

/// Looks components up, remembering hub listings so each repository is asked once.
struct Resolver<'a> {
    hub: &'a HubConfig,
    client: Option<HubClient>,
    listings: HashMap<(String, String), Result<RepoInfo, String>>,
}

/// Locates every component of `spec`: local paths, then the cache, then (unless offline) the
/// hub's file list. Downloads nothing.
pub fn resolve(spec: &ModelSpec, hub: &HubConfig) -> Result<ResolvedModel, Error> {
    let mut resolver = Resolver {
        hub,
        client: (!hub.offline).then(|| HubClient::new(hub)),
        listings: HashMap::new(),
    };
    let components = Component::ALL
        .iter()
        .map(|&c| resolver.component(spec, c))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(ResolvedModel {
        components,
        cache_dir: hub.cache_dir.clone(),
        endpoint: hub.endpoint.clone(),
        offline: hub.offline,
    })
}

/// Locates every component and downloads the files `stage` needs that are not on disk yet
/// (into the shared cache). Before downloading, the headers of what is to come and of what is
/// already on disk are checked ([`check_components_on_hub`]), so a wrong or damaged model is
/// named before gigabytes arrive. Fails, naming each part, when something `stage` needs is still
/// unavailable afterwards. Call it with [`Stage::Training`] before training and with
/// [`Stage::Samples`] when previews first run, so the untrained expert is fetched only then.
pub fn fetch(
    spec: &ModelSpec,
    hub: &HubConfig,
    stage: Stage,
    options: &CheckOptions,
) -> Result<ResolvedModel, Error> {
    spec.validate().map_err(Error::Spec)?;
    let model = resolve(spec, hub)?;
    let mut requests: Vec<DownloadRequest> = Vec::new();
    for c in model.components.iter().filter(|c| stage.includes(c.need)) {
        for r in &c.downloads {
            let duplicate = requests.iter().any(|q| {
                q.repo_id == r.repo_id && q.commit == r.commit && q.file.path == r.file.path
            });
            if !duplicate {
                requests.push(r.clone());
            }
        }
    }
    if requests.is_empty() {
        model.require(stage)?;
        return Ok(model);
    }
    // Nothing is downloaded while another part the stage needs is unavailable anyway.
    model.unavailable(stage, false)?;
    let failures: Vec<CheckFailure> = check_components_on_hub(&model, hub, stage, options)?
        .into_iter()
        .filter_map(|(_, r)| r.err())
        .collect();
    if !failures.is_empty() {
        return Err(Error::Checks(failures));
    }
    let client = HubClient::new(hub);
    download_all(&client, hub, &requests)?;
    let model = resolve(spec, hub)?;
    model.require(stage)?;
    Ok(model)
}

impl Resolver<'_> {
    fn component(
        &mut self,
        spec: &ModelSpec,
        component: Component,
    ) -> Result<ResolvedComponent, Error> {
        let need = spec.need(component);
        let candidates = spec.candidates(component);
        let mut out = ResolvedComponent::empty(component, need);
        if let Some(first) = candidates.first() {
            out.key = Some(first.key);
            out.value = Some(first.value.clone());
        }
        if need == Need::Unused {
            return Ok(out);
        }
        if candidates.is_empty() {
            out.state = State::Missing {
                files: Vec::new(),
                reason: "no job key names it".into(),
                fix: how_to_get(component),
            };
            return Ok(out);
        }
        let mut skipped = None;
        for candidate in &candidates {
            let found = self.candidate(component, need, candidate)?;
            if candidate.optional && matches!(found.state, State::Missing { .. }) {
                // A tokenizer next to the text encoder is welcome, not required.
                skipped = Some(found);
                continue;
            }
            return Ok(found);
        }
        let mut out = skipped.unwrap_or(out);
        out.state = State::Missing {
            files: Vec::new(),
            reason: format!("not found at {}", out.source_label()),
            fix: how_to_get(component),
        };
        Ok(out)
    }

    fn candidate(
        &mut self,
        component: Component,
        need: Need,
        candidate: &Candidate,
    ) -> Result<ResolvedComponent, Error> {
        let mut out = ResolvedComponent::empty(component, need);
        out.key = Some(candidate.key);
        out.value = Some(candidate.value.clone());
        match Source::parse(&candidate.value, self.hub.home.as_deref()) {
            Source::Local(path) => self.local(out, candidate, &path),
            Source::Repo(repo) => self.repo(out, candidate, &repo),
        }
    }

    fn local(
        &mut self,
        mut out: ResolvedComponent,
        candidate: &Candidate,
        path: &Path,
    ) -> Result<ResolvedComponent, Error> {
        let component = out.component;
        if !path.exists() {
            out.state = State::Missing {
                files: vec![path.display().to_string()],
                reason: "this path does not exist".into(),
                fix: format!(
                    "Correct {} (a local file or folder), or give a Hugging Face repo id as org/name.",
                    candidate.key
                ),
            };
            return Ok(out);
        }
        let (tree_root, start, names_component) = if path.is_file() {
            let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (parent, name, true)
        } else {
            (path.to_path_buf(), String::new(), candidate.names_component)
        };
        let tree = FileTree::Local(tree_root.clone());
        let place = path.display().to_string();
        match locate(&tree, &start, component, names_component) {
            Err(nf) => {
                out.state = State::Missing {
                    files: Vec::new(),
                    reason: not_found_text(&nf, &place),
                    fix: how_to_get(component),
                };
            }
            Ok(found) => {
                let on_disk = |name: &str| {
                    let mut p = tree_root.clone();
                    p.extend(name.split('/').filter(|part| !part.is_empty()));
                    p
                };
                out.origin = Some(if path.is_file() {
                    Origin::LocalFile(path.to_path_buf())
                } else {
                    Origin::LocalFolder(on_disk(&found.folder))
                });
                out.layout = Some(found.layout);
                out.files = found
                    .files
                    .iter()
                    .map(|f| ComponentFile {
                        name: f.clone(),
                        path: Some(on_disk(f)),
                        size: tree.size(f),
                    })
                    .collect();
                out.state = if found.missing.is_empty() {
                    State::Ready
                } else {
                    State::Missing {
                        files: found.missing.iter().map(|m| on_disk(m).display().to_string()).collect(),
                        reason: format!(
                            "{} of {} weight files are missing",
                            found.missing.len(),
                            found.missing.len() + found.files.iter().filter(|f| f.ends_with(".safetensors")).count()
                        ),
                        fix: "Copy the missing files into that folder (an interrupted copy or download?).".into(),
                    }
                };
            }
        }
        Ok(out)
    }

    fn listing(&mut self, repo: &RepoRef) -> Result<RepoInfo, String> {
        let key = (repo.repo_id.clone(), repo.revision.clone());
        if let Some(found) = self.listings.get(&key) {
            return found.clone();
        }
        let result = match &self.client {
            Some(client) => client
                .repo_info(&repo.repo_id, &repo.revision)
                .map_err(|e| e.to_string()),
            None => Err("offline".to_string()),
        };
        self.listings.insert(key, result.clone());
        result
    }

    fn repo(
        &mut self,
        mut out: ResolvedComponent,
        candidate: &Candidate,
        repo: &RepoRef,
    ) -> Result<ResolvedComponent, Error> {
        let component = out.component;
        let cache = RepoCache::new(&self.hub.cache_dir, &repo.repo_id);
        let place = format!("{}@{}", repo.repo_id, repo.revision);

        // 1. The cache, at the commit the revision last resolved to.
        let mut cached: Option<Result<Located, NotFound>> = None;
        if let Some(commit) = cache.commit_for(&repo.revision)? {
            let snapshot = cache.snapshot_dir(&commit);
            if snapshot.is_dir() {
                let tree = FileTree::Local(snapshot);
                let found = locate(
                    &tree,
                    &repo.path_in_repo,
                    component,
                    candidate.names_component,
                );
                if let Ok(l) = &found {
                    if l.missing.is_empty() {
                        fill_from_snapshot(&mut out, &cache, &commit, l, &tree);
                        out.origin = Some(Origin::Cache {
                            repo: repo.narrowed_to(l),
                            commit: commit.clone(),
                        });
                        out.state = State::Ready;
                        return Ok(out);
                    }
                }
                cached = Some(found);
            }
        }

        // 2. Offline: say exactly what is missing from the cache.
        if self.client.is_none() {
            let files = match &cached {
                Some(Ok(l)) => l.missing.iter().map(|m| format!("{place}: {m}")).collect(),
                Some(Err(NotFound::Nothing { looked_in })) => looked_in
                    .iter()
                    .map(|f| format!("{place}: {}", expected_files(component, f)))
                    .collect(),
                Some(Err(other)) => vec![not_found_text(other, &place)],
                None => {
                    let start = &repo.path_in_repo;
                    let mut folders: Vec<String> = Vec::new();
                    if candidate.names_component {
                        folders.push(start.clone());
                    }
                    folders.extend(component.subfolders().iter().map(|s| {
                        if start.is_empty() {
                            s.to_string()
                        } else {
                            format!("{start}/{s}")
                        }
                    }));
                    let looks_like_file =
                        start.ends_with(".safetensors") || start.ends_with(".json");
                    if looks_like_file {
                        vec![format!("{place}: {start}")]
                    } else {
                        vec![format!(
                            "{place}: {}",
                            folders
                                .first()
                                .map(|f| expected_files(component, f))
                                .unwrap_or_default()
                        )]
                    }
                }
            };
            out.state = State::Missing {
                files,
                reason: format!(
                    "not in the Hugging Face cache {} and HF_HUB_OFFLINE is set",
                    self.hub.cache_dir.display()
                ),
                fix: "Unset HF_HUB_OFFLINE and run `wanlora models fetch JOB.yaml`, or point the key at local files.".into(),
            };
            return Ok(out);
        }

        // 3. The hub: what the repository holds at this revision, and what of it is cached.
        let info = match self.listing(repo) {
            Ok(info) => info,
            Err(reason) => {
                out.state = State::Missing {
                    files: Vec::new(),
                    reason,
                    fix: String::new(),
                };
                return Ok(out);
            }
        };
        let tree = FileTree::remote(&info.files);
        let found = match locate(
            &tree,
            &repo.path_in_repo,
            component,
            candidate.names_component,
        ) {
            Ok(found) => found,
            Err(nf) => {
                out.state = State::Missing {
                    files: Vec::new(),
                    reason: not_found_text(&nf, &place),
                    fix: how_to_get(component),
                };
                return Ok(out);
            }
        };
        out.layout = Some(found.layout);
        out.origin = Some(Origin::Hub {
            repo: repo.narrowed_to(&found),
            commit: info.commit.clone(),
        });
        if !found.missing.is_empty() {
            out.state = State::Missing {
                files: found
                    .missing
                    .iter()
                    .map(|m| format!("{place}: {m}"))
                    .collect(),
                reason: "the repository itself lacks these shards".into(),
                fix: "Use another revision or repository.".into(),
            };
            return Ok(out);
        }
        let mut bytes = 0;
        for name in &found.files {
            let remote = info.files.iter().find(|f| &f.path == name);
            let size = remote.and_then(|f| f.size);
            let pointer = cache.snapshot_file(&info.commit, name);
            let present = pointer.exists();
            if !present {
                let blob_cached = remote
                    .and_then(|f| f.etag())
                    .is_some_and(|e| cache.blob_path(e).exists());
                if !blob_cached {
                    bytes += size.unwrap_or(0);
                }
                if let Some(file) = remote {
                    out.downloads.push(DownloadRequest {
                        repo_id: repo.repo_id.clone(),
                        revision: repo.revision.clone(),
                        commit: info.commit.clone(),
                        file: file.clone(),
                    });
                }
            }
            out.files.push(ComponentFile {
                name: name.clone(),
                path: present.then_some(pointer),
                size,
            });
        }
        out.state = if out.downloads.is_empty() {
            State::Ready
        } else {
            State::Download {
                bytes,
                files: out.downloads.len(),
            }
        };
        Ok(out)
    }
}

fn fill_from_snapshot(
    out: &mut ResolvedComponent,
    cache: &RepoCache,
    commit: &str,
    found: &Located,
    tree: &FileTree,
) {
    out.layout = Some(found.layout);
    out.files = found
        .files
        .iter()
        .map(|f| ComponentFile {
            name: f.clone(),
            path: Some(cache.snapshot_file(commit, f)),
            size: tree.size(f),
        })
        .collect();
}

impl RepoRef {
    /// This reference narrowed to where a component was found: its file, or its folder.
    fn narrowed_to(&self, found: &Located) -> RepoRef {
        let path_in_repo = match found.layout {
            Layout::SingleFile => found
                .files
                .iter()
                .rfind(|f| f.ends_with(".safetensors"))
                .cloned()
                .unwrap_or_else(|| found.folder.clone()),
            _ => found.folder.clone(),
        };
        RepoRef {
            path_in_repo,
            ..self.clone()
        }
    }
}
