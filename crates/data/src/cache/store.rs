//! Cache entries on disk: `<root>/latents/<key>.safetensors` and `<root>/text/<key>.safetensors`,
//! each carrying its key in the safetensors metadata, plus `<root>/hashes.json`.

use super::{CacheError, NamedTensors};
use crate::atomic::{write_atomically, TEMP_MARKER};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The two kinds of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Latent,
    Text,
}

impl EntryKind {
    fn folder(self) -> &'static str {
        match self {
            Self::Latent => "latents",
            Self::Text => "text",
        }
    }
}

/// The metadata field that repeats an entry's key, checked on every read.
const KEY_FIELD: &str = "wanlora_cache_key";

/// The cache folder.
#[derive(Debug, Clone)]
pub struct CacheStore {
    root: PathBuf,
}

impl CacheStore {
    /// Opens (creating) the cache folder and removes temporary files left by processes that are
    /// gone (a crash in the middle of a write).
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        for kind in [EntryKind::Latent, EntryKind::Text] {
            let dir = root.join(kind.folder());
            std::fs::create_dir_all(&dir).map_err(|e| CacheError::io(&dir, e))?;
            remove_orphaned_temporaries(&dir);
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry with this key lives.
    pub fn entry_path(&self, kind: EntryKind, key: &str) -> PathBuf {
        self.root
            .join(kind.folder())
            .join(format!("{key}.safetensors"))
    }

    /// Whether a complete entry exists: the file's size matches what its header describes. Only
    /// the header is read.
    pub fn has_entry(&self, kind: EntryKind, key: &str) -> bool {
        header_is_complete(&self.entry_path(kind, key)).unwrap_or(false)
    }

    /// The entry, or `None` when there is none. A file that exists but does not parse, or whose
    /// stored key differs, is an error naming the file.
    pub fn read(&self, kind: EntryKind, key: &str) -> Result<Option<NamedTensors>, CacheError> {
        let path = self.entry_path(kind, key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io(&path, e)),
        };
        let (tensors, metadata) =
            NamedTensors::from_safetensors(&bytes).map_err(|message| CacheError::Corrupt {
                path: path.clone(),
                message,
            })?;
        if metadata.get(KEY_FIELD).map(String::as_str) != Some(key) {
            return Err(CacheError::Corrupt {
                path,
                message: "its stored key does not match its name".into(),
            });
        }
        Ok(Some(tensors))
    }

    /// Writes an entry atomically; `description` (the key's canonical text) is kept in the
    /// metadata for whoever inspects the cache by hand.
    pub fn write(
        &self,
        kind: EntryKind,
        key: &str,
        tensors: &NamedTensors,
        description: &str,
    ) -> Result<(), CacheError> {
        let path = self.entry_path(kind, key);
        let mut metadata = BTreeMap::new();
        metadata.insert(KEY_FIELD.to_string(), key.to_string());
        metadata.insert(
            "wanlora_cache_description".to_string(),
            description.to_string(),
        );
        let bytes =
            tensors
                .to_safetensors(&metadata)
                .map_err(|message| CacheError::EncoderOutput {
                    what: match kind {
                        EntryKind::Latent => "latent",
                        EntryKind::Text => "text",
                    },
                    message,
                })?;
        write_atomically(&path, &bytes).map_err(|e| CacheError::io(&path, e))
    }
}

/// True when the file holds its whole safetensors payload: 8 + header length + the end offset of
/// the last tensor.
fn header_is_complete(path: &Path) -> std::io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100 << 20 || 8 + header_len > file_len {
        return Ok(false);
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return Ok(false);
    };
    let data_end = json
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, _)| name.as_str() != "__metadata__")
                .filter_map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    Ok(8 + header_len + data_end == file_len)
}

/// Deletes `.<name>.tmp-<pid>-<n>` files whose writing process no longer runs.
fn remove_orphaned_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, tail)) = name.split_once(TEMP_MARKER) else {
            continue;
        };
        let pid = tail.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NamedTensor;

    fn tensors() -> NamedTensors {
        NamedTensors::new(vec![
            NamedTensor::from_f32("x", vec![2], &[1.0, 2.0]).unwrap()
        ])
    }

    #[test]
    fn write_read_and_completeness() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path()).unwrap();
        assert!(!store.has_entry(EntryKind::Latent, "k1"));
        assert_eq!(store.read(EntryKind::Latent, "k1").unwrap(), None);
        store
            .write(EntryKind::Latent, "k1", &tensors(), "test")
            .unwrap();
        assert!(store.has_entry(EntryKind::Latent, "k1"));
        assert!(!store.has_entry(EntryKind::Text, "k1"));
        assert_eq!(
            store.read(EntryKind::Latent, "k1").unwrap(),
            Some(tensors())
        );

        // A cut-off file is not an entry, and reading it says which file is damaged.
        let path = store.entry_path(EntryKind::Latent, "k1");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(!store.has_entry(EntryKind::Latent, "k1"));
        let err = store.read(EntryKind::Latent, "k1").unwrap_err().to_string();
        assert!(err.contains("k1.safetensors"), "{err}");

        // An entry renamed to another key is refused.
        store
            .write(EntryKind::Text, "a", &tensors(), "test")
            .unwrap();
        std::fs::rename(
            store.entry_path(EntryKind::Text, "a"),
            store.entry_path(EntryKind::Text, "b"),
        )
        .unwrap();
        assert!(store.read(EntryKind::Text, "b").is_err());
    }

    #[test]
    fn leftovers_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let latents = dir.path().join("latents");
        std::fs::create_dir_all(&latents).unwrap();
        // pid 0 never names a running process in /proc.
        let orphan = latents.join(format!(".k.safetensors{TEMP_MARKER}0-1"));
        let live = latents.join(format!(
            ".j.safetensors{TEMP_MARKER}{}-1",
            std::process::id()
        ));
        std::fs::write(&orphan, b"half").unwrap();
        std::fs::write(&live, b"in progress").unwrap();
        CacheStore::open(dir.path()).unwrap();
        assert!(!orphan.exists());
        assert!(live.exists());
    }
}
