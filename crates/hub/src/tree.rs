//! Finding one component's files inside a place that holds files: a local folder, a cached
//! snapshot, or the hub's listing of a repository. The same rules serve all three, so a diffusers
//! folder on disk, in the cache and on the hub resolve alike.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use regex::Regex;
use serde::Deserialize;

use crate::client::RemoteFile;
use crate::spec::Component;

/// Files of a tokenizer folder besides `tokenizer.json`, taken along when present.
const TOKENIZER_COMPANIONS: [&str; 3] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
];
/// Preferred single weight file names in a diffusers component folder.
const CANONICAL_WEIGHTS: [&str; 2] = ["diffusion_pytorch_model.safetensors", "model.safetensors"];

/// Somewhere files can be listed.
pub(crate) enum FileTree {
    /// A folder on disk (also a cache snapshot, whose entries are symlinks into `blobs/`).
    Local(PathBuf),
    /// The hub's file list: path → size.
    Remote(BTreeMap<String, Option<u64>>),
}

/// How a component's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One safetensors file (ComfyUI style, or a small diffusers component such as the VAE).
    SingleFile,
    /// Several safetensors shards, normally with a `*.safetensors.index.json`.
    Sharded { shards: usize },
    /// `tokenizer.json` and its companions.
    TokenizerFiles,
}

/// A component found in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// Folder inside the tree holding it (`""` for the root).
    pub folder: String,
    pub layout: Layout,
    /// Present files it needs, relative to the tree root.
    pub files: Vec<String>,
    /// Needed files that are absent, relative to the tree root (exact names).
    pub missing: Vec<String>,
}

/// Why a component was not found in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotFound {
    /// None of the places it could be exists.
    Nothing { looked_in: Vec<String> },
    /// A folder holds several weight files and nothing says which one is meant.
    Ambiguous { folder: String, files: Vec<String> },
    /// Something is there but in a form wanlora does not read.
    Unsupported { path: String, reason: String },
}

fn join(folder: &str, name: &str) -> String {
    match (folder.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => folder.to_string(),
        (false, false) => format!("{folder}/{name}"),
    }
}

impl FileTree {
    pub fn remote(files: &[RemoteFile]) -> FileTree {
        FileTree::Remote(files.iter().map(|f| (f.path.clone(), f.size)).collect())
    }

    fn local_path(root: &std::path::Path, path: &str) -> PathBuf {
        let mut p = root.to_path_buf();
        if !path.is_empty() {
            p.extend(path.split('/'));
        }
        p
    }

    /// Files directly inside `folder`, with sizes. Broken symlinks (a cache entry whose blob is
    /// gone) do not count as files.
    pub fn children(&self, folder: &str) -> Vec<(String, Option<u64>)> {
        match self {
            FileTree::Local(root) => {
                let Ok(entries) = fs::read_dir(Self::local_path(root, folder)) else {
                    return Vec::new();
                };
                let mut out: Vec<(String, Option<u64>)> = entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let meta = fs::metadata(e.path()).ok()?;
                        (meta.is_file() && !name.starts_with('.'))
                            .then_some((name, Some(meta.len())))
                    })
                    .collect();
                out.sort();
                out
            }
            FileTree::Remote(files) => {
                let prefix = join(folder, "");
                let prefix = if prefix.is_empty() {
                    prefix
                } else {
                    prefix + "/"
                };
                files
                    .iter()
                    .filter_map(|(path, size)| {
                        let rest = path.strip_prefix(&prefix)?;
                        (!rest.contains('/')).then(|| (rest.to_string(), *size))
                    })
                    .collect()
            }
        }
    }

    pub fn is_file(&self, path: &str) -> bool {
        match self {
            FileTree::Local(root) => {
                fs::metadata(Self::local_path(root, path)).is_ok_and(|m| m.is_file())
            }
            FileTree::Remote(files) => files.contains_key(path),
        }
    }

    pub fn is_dir(&self, path: &str) -> bool {
        match self {
            FileTree::Local(root) => {
                fs::metadata(Self::local_path(root, path)).is_ok_and(|m| m.is_dir())
            }
            FileTree::Remote(files) => {
                path.is_empty() || {
                    let prefix = format!("{path}/");
                    files
                        .range(prefix.clone()..)
                        .next()
                        .is_some_and(|(k, _)| k.starts_with(&prefix))
                }
            }
        }
    }

    pub fn size(&self, path: &str) -> Option<u64> {
        match self {
            FileTree::Local(root) => fs::metadata(Self::local_path(root, path))
                .ok()
                .map(|m| m.len()),
            FileTree::Remote(files) => files.get(path).copied().flatten(),
        }
    }

    /// Contents of a file, where the tree is on disk.
    fn read(&self, path: &str) -> Option<std::io::Result<Vec<u8>>> {
        match self {
            FileTree::Local(root) => Some(fs::read(Self::local_path(root, path))),
            FileTree::Remote(_) => None,
        }
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// Why a weight format is not read, by file ending.
fn unsupported_format(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if [".pth", ".pt", ".bin", ".ckpt"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        Some("a PyTorch pickle; wanlora reads safetensors only. Use the safetensors version of these weights (for example ComfyUI's repackaged files or a diffusers repository)")
    } else if lower.ends_with(".gguf") {
        Some("a GGUF file; wanlora trains on safetensors (fp32, bf16, fp16 or fp8) only. Use a safetensors version of the model")
    } else {
        None
    }
}

/// Finds `component` in `tree` starting at `start` (a file or folder, `""` = root). When
/// `names_component` is false, `start` is a pipeline and only the component's sub-folders count.
pub(crate) fn locate(
    tree: &FileTree,
    start: &str,
    component: Component,
    names_component: bool,
) -> Result<Located, NotFound> {
    if !start.is_empty() && tree.is_file(start) {
        return locate_file(tree, start, component);
    }
    let mut folders = Vec::new();
    if names_component {
        folders.push(start.to_string());
    }
    folders.extend(component.subfolders().iter().map(|s| join(start, s)));
    for folder in &folders {
        if !tree.is_dir(folder) {
            continue;
        }
        if let Some(found) = locate_in_folder(tree, folder, component) {
            return found;
        }
    }
    Err(NotFound::Nothing { looked_in: folders })
}

fn locate_file(tree: &FileTree, path: &str, component: Component) -> Result<Located, NotFound> {
    let name = file_name(path);
    let folder = parent(path).to_string();
    if component == Component::Tokenizer {
        if name != "tokenizer.json" {
            return Err(NotFound::Unsupported {
                path: path.to_string(),
                reason:
                    "the tokenizer must be given as a tokenizer.json file or a folder holding one"
                        .into(),
            });
        }
        let mut files = vec![path.to_string()];
        files.extend(
            TOKENIZER_COMPANIONS
                .iter()
                .map(|c| join(&folder, c))
                .filter(|p| tree.is_file(p)),
        );
        return Ok(Located {
            folder,
            layout: Layout::TokenizerFiles,
            files,
            missing: Vec::new(),
        });
    }
    if name.ends_with(".safetensors.index.json") {
        return locate_sharded(tree, &folder, name);
    }
    if name.ends_with(".safetensors") {
        return Ok(Located {
            folder,
            layout: Layout::SingleFile,
            files: vec![path.to_string()],
            missing: Vec::new(),
        });
    }
    Err(NotFound::Unsupported {
        path: path.to_string(),
        reason: unsupported_format(name)
            .unwrap_or("not a safetensors file")
            .to_string(),
    })
}

fn locate_in_folder(
    tree: &FileTree,
    folder: &str,
    component: Component,
) -> Option<Result<Located, NotFound>> {
    let names: Vec<String> = tree.children(folder).into_iter().map(|(n, _)| n).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    if component == Component::Tokenizer {
        if has("tokenizer.json") {
            return Some(locate_file(
                tree,
                &join(folder, "tokenizer.json"),
                component,
            ));
        }
        if has("spiece.model") {
            return Some(Err(NotFound::Unsupported {
                path: join(folder, "spiece.model"),
                reason:
                    "only a SentencePiece model is here; wanlora's tokenizer reads tokenizer.json. \
                         Take the tokenizer/ folder of a Wan diffusers repository (e.g. \
                         Wan-AI/Wan2.2-I2V-A14B-Diffusers) or google/umt5-xxl"
                        .into(),
            }));
        }
        return None;
    }
    let mut indexes: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors.index.json"))
        .collect();
    // The plain diffusers index before variants such as `….fp16.safetensors.index.json`.
    indexes.sort_by_key(|n| (n.matches('.').count(), n.len()));
    if let Some(index) = indexes.first() {
        return Some(locate_sharded(tree, folder, index));
    }
    let weights: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    if weights.is_empty() {
        return names.iter().find_map(|n| {
            unsupported_format(n).map(|reason| {
                Err(NotFound::Unsupported {
                    path: join(folder, n),
                    reason: reason.to_string(),
                })
            })
        });
    }
    let shard_groups: BTreeSet<String> = weights
        .iter()
        .filter_map(|n| shard_pattern().captures(n).map(|c| c[1].to_string()))
        .collect();
    if shard_groups.len() == 1 && weights.iter().all(|n| shard_pattern().is_match(n)) {
        let stem = shard_groups.into_iter().next().unwrap_or_default();
        return Some(locate_sharded(
            tree,
            folder,
            &format!("{stem}.safetensors.index.json"),
        ));
    }
    let chosen = if weights.len() == 1 {
        Some(weights[0].as_str())
    } else {
        CANONICAL_WEIGHTS.iter().copied().find(|c| has(c))
    };
    Some(match chosen {
        Some(name) => Ok(Located {
            folder: folder.to_string(),
            layout: Layout::SingleFile,
            files: config_if_present(tree, folder)
                .into_iter()
                .chain([join(folder, name)])
                .collect(),
            missing: Vec::new(),
        }),
        None => Err(NotFound::Ambiguous {
            folder: folder.to_string(),
            files: weights.iter().map(|w| w.to_string()).collect(),
        }),
    })
}

fn config_if_present(tree: &FileTree, folder: &str) -> Option<String> {
    let config = join(folder, "config.json");
    tree.is_file(&config).then_some(config)
}

fn shard_pattern() -> Regex {
    // `<stem>-00001-of-00012.safetensors`, the naming of transformers/diffusers shards.
    Regex::new(r"^(.+)-(\d+)-of-(\d+)\.safetensors$")
        .unwrap_or_else(|_| unreachable!("valid pattern"))
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// A sharded component from its index name (which may be absent from the tree).
fn locate_sharded(tree: &FileTree, folder: &str, index_name: &str) -> Result<Located, NotFound> {
    let index = join(folder, index_name);
    let stem = index_name.trim_end_matches(".safetensors.index.json");
    let mut shards: BTreeSet<String> = BTreeSet::new();
    // The index names every shard; on disk it is read, on the hub the listing is complete anyway.
    if tree.is_file(&index) {
        if let Some(read) = tree.read(&index) {
            let parsed = read.map_err(|e| e.to_string()).and_then(|bytes| {
                serde_json::from_slice::<ShardIndex>(&bytes).map_err(|e| e.to_string())
            });
            match parsed {
                Ok(idx) => shards.extend(idx.weight_map.into_values()),
                Err(e) => {
                    return Err(NotFound::Unsupported {
                        path: index.clone(),
                        reason: format!("the shard index cannot be read ({e}); get it again"),
                    })
                }
            }
        }
    }
    // Shard names also tell their count: `-of-00012` means twelve, so gaps are visible too.
    let pattern = shard_pattern();
    for (name, _) in tree.children(folder) {
        let Some(c) = pattern.captures(&name) else {
            continue;
        };
        if &c[1] != stem {
            continue;
        }
        let width = c[2].len();
        let Ok(count) = c[3].parse::<usize>() else {
            continue;
        };
        for i in 1..=count {
            shards.insert(format!("{stem}-{i:0width$}-of-{}.safetensors", &c[3]));
        }
    }
    if shards.is_empty() {
        return Err(NotFound::Nothing {
            looked_in: vec![format!("{index} and its shards")],
        });
    }
    let mut files: Vec<String> = config_if_present(tree, folder).into_iter().collect();
    let mut missing = Vec::new();
    if tree.is_file(&index) {
        files.push(index.clone());
    }
    for shard in &shards {
        let p = join(folder, shard);
        if tree.is_file(&p) {
            files.push(p);
        } else {
            missing.push(p);
        }
    }
    Ok(Located {
        folder: folder.to_string(),
        layout: Layout::Sharded {
            shards: shards.len(),
        },
        files,
        missing,
    })
}

/// The files a component would have in `folder`, for messages when nothing could be listed.
pub(crate) fn expected_files(component: Component, folder: &str) -> String {
    let shown = if folder.is_empty() {
        "the repository root".to_string()
    } else {
        format!("{folder}/")
    };
    match component {
        Component::Tokenizer => format!("{shown} (tokenizer.json)"),
        _ => format!("{shown} (config.json and the *.safetensors weights)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(paths: &[&str]) -> FileTree {
        FileTree::Remote(paths.iter().map(|p| (p.to_string(), Some(1))).collect())
    }

    #[test]
    fn diffusers_pipeline_folders_are_found_by_subfolder() {
        let tree = remote(&[
            "model_index.json",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
            "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "transformer_2/config.json",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "tokenizer/tokenizer.json",
            "tokenizer/spiece.model",
        ]);
        let high = locate(&tree, "", Component::HighNoiseExpert, false).unwrap();
        assert_eq!(high.layout, Layout::Sharded { shards: 2 });
        assert_eq!(high.files.len(), 4);
        assert!(high.missing.is_empty());
        let vae = locate(&tree, "", Component::Vae, false).unwrap();
        assert_eq!(
            vae.files,
            vec!["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
        );
        let tok = locate(&tree, "", Component::Tokenizer, false).unwrap();
        assert_eq!(
            tok.files,
            vec!["tokenizer/tokenizer.json", "tokenizer/spiece.model"]
        );
        // transformer_2/ has a config but no weights: nothing to train on.
        assert!(matches!(
            locate(&tree, "", Component::LowNoiseExpert, false),
            Err(NotFound::Nothing { .. })
        ));
    }

    #[test]
    fn missing_shards_are_listed_by_name_from_the_shard_count() {
        let tree = remote(&[
            "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
            "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
        ]);
        let found = locate(&tree, "", Component::HighNoiseExpert, false).unwrap();
        assert_eq!(
            found.missing,
            vec!["transformer/diffusion_pytorch_model-00002-of-00003.safetensors"]
        );
    }

    #[test]
    fn a_local_index_names_the_shards_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("transformer");
        fs::create_dir_all(&t).unwrap();
        fs::write(
            t.join("diffusion_pytorch_model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"a":"diffusion_pytorch_model-00001-of-00002.safetensors","b":"diffusion_pytorch_model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        fs::write(
            t.join("diffusion_pytorch_model-00002-of-00002.safetensors"),
            b"x",
        )
        .unwrap();
        let tree = FileTree::Local(dir.path().to_path_buf());
        let found = locate(&tree, "", Component::HighNoiseExpert, false).unwrap();
        assert_eq!(
            found.missing,
            vec!["transformer/diffusion_pytorch_model-00001-of-00002.safetensors"]
        );
    }

    #[test]
    fn single_files_pickles_and_ambiguity() {
        let tree = remote(&[
            "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors",
            "split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors",
            "split_files/text_encoders/umt5.pth",
        ]);
        let one = locate(
            &tree,
            "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors",
            Component::HighNoiseExpert,
            true,
        )
        .unwrap();
        assert_eq!(one.layout, Layout::SingleFile);
        assert!(matches!(
            locate(&tree, "split_files/diffusion_models", Component::HighNoiseExpert, true),
            Err(NotFound::Ambiguous { files, .. }) if files.len() == 2
        ));
        assert!(matches!(
            locate(&tree, "split_files/text_encoders", Component::TextEncoder, true),
            Err(NotFound::Unsupported { reason, .. }) if reason.contains("pickle")
        ));
    }

    #[test]
    fn a_lone_sentencepiece_model_is_explained() {
        let tree = remote(&["tokenizer/spiece.model"]);
        assert!(matches!(
            locate(&tree, "", Component::Tokenizer, false),
            Err(NotFound::Unsupported { reason, .. }) if reason.contains("tokenizer.json")
        ));
    }
}
