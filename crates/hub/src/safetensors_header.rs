//! Reading a safetensors file's header without its tensor data: names, dtypes, shapes, offsets,
//! and whether the file is whole.
//!
//! Layout: 8 bytes little-endian header length `n`, `n` bytes of JSON
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`, then the data, whose
//! length must equal the largest `end`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// The safetensors library refuses headers larger than this.
const MAX_HEADER_BYTES: u64 = 100_000_000;
const LFS_POINTER_START: &[u8] = b"version https://git-lfs.github.com/spec";

/// A tensor element type as safetensors spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
    /// A newer or exotic type; sizes are not checked for it.
    Other(String),
}

impl Dtype {
    pub fn parse(s: &str) -> Dtype {
        match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E5M2" => Dtype::F8E5M2,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E8M0" => Dtype::F8E8M0,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            other => Dtype::Other(other.to_string()),
        }
    }

    /// Bytes per element, for the types whose size is a whole number of bytes.
    pub fn size_bytes(&self) -> Option<u64> {
        Some(match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E8M0 => {
                1
            }
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::Other(_) => return None,
        })
    }

    /// The name PyTorch users know (`fp8_e4m3fn`, `bf16`, …).
    pub fn short_name(&self) -> String {
        match self {
            Dtype::F8E4M3 => "fp8_e4m3fn".into(),
            Dtype::F8E5M2 => "fp8_e5m2".into(),
            Dtype::F8E8M0 => "fp8_e8m0".into(),
            Dtype::F16 => "fp16".into(),
            Dtype::BF16 => "bf16".into(),
            Dtype::F32 => "fp32".into(),
            Dtype::F64 => "fp64".into(),
            Dtype::Other(s) => s.to_ascii_lowercase(),
            other => format!("{other:?}").to_ascii_lowercase(),
        }
    }

    pub fn is_fp8(&self) -> bool {
        matches!(self, Dtype::F8E4M3 | Dtype::F8E5M2)
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range inside the data section.
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The parsed header of one file.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    pub path: PathBuf,
    pub file_len: u64,
    pub header_len: u64,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// Why a file is not a whole, readable safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    #[error("is {len} bytes long, too short for a safetensors file; download or copy it again")]
    TooShort { len: u64 },
    #[error(
        "is a Git LFS pointer, not the weights: the repository was cloned without git-lfs. Run \
         `git lfs pull` in that clone, or give the repo id instead so wanlora downloads it"
    )]
    LfsPointer,
    #[error(
        "is cut off inside its header ({header_len}-byte header announced, {file_len} bytes in the \
         file): an interrupted download or copy; get the file again"
    )]
    TruncatedHeader { header_len: u64, file_len: u64 },
    #[error("is not a safetensors file (it announces a {header_len}-byte header)")]
    NotSafetensors { header_len: u64 },
    #[error("has a header that is not valid safetensors JSON ({0}); the file is damaged or not safetensors")]
    BadJson(String),
    #[error("has a malformed entry for tensor {name}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error(
        "is truncated: its tensors need {needed} bytes of data but the file holds {actual} ({} \
         missing). An interrupted download or copy? Get the file again",
        needed - actual
    )]
    Truncated { needed: u64, actual: u64 },
    #[error(
        "has {} bytes after the last tensor (data {expected} bytes expected, {actual} found): the \
         file is damaged; get it again",
        actual - expected
    )]
    TrailingBytes { expected: u64, actual: u64 },
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

fn problem(path: &Path, problem: HeaderProblem) -> Error {
    Error::Header {
        path: path.to_path_buf(),
        problem,
    }
}

/// Bytes read from the start of a file to recognise it (enough for a Git LFS pointer's first line).
pub const PREFIX_BYTES: u64 = 64;

/// Reads and validates the header of `path` (reads at most the header, never the tensor data).
pub fn read_header(path: &Path) -> Result<SafetensorsHeader, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut prefix = vec![0u8; PREFIX_BYTES.min(file_len) as usize];
    file.read_exact(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    let header_len = header_len_from_prefix(path, file_len, &prefix)?;
    file.seek(SeekFrom::Start(8))
        .map_err(|e| Error::io(path, e))?;
    let mut json = vec![0u8; header_len as usize];
    file.read_exact(&mut json).map_err(|e| Error::io(path, e))?;
    parse_header(path, file_len, header_len, &json)
}

/// The header length announced by the first bytes of a `file_len`-byte file (`prefix`: its first
/// [`PREFIX_BYTES`] bytes, or all of it when shorter), or why the file is no safetensors file.
/// `path` names the file in messages (a local path, or a repository file for remote reads).
pub fn header_len_from_prefix(path: &Path, file_len: u64, prefix: &[u8]) -> Result<u64, Error> {
    if prefix.starts_with(LFS_POINTER_START) {
        return Err(problem(path, HeaderProblem::LfsPointer));
    }
    let Some(first8) = prefix.get(..8) else {
        return Err(problem(path, HeaderProblem::TooShort { len: file_len }));
    };
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(first8);
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(problem(path, HeaderProblem::NotSafetensors { header_len }));
    }
    if header_len > file_len.saturating_sub(8) {
        return Err(problem(
            path,
            HeaderProblem::TruncatedHeader {
                header_len,
                file_len,
            },
        ));
    }
    Ok(header_len)
}

/// Parses and validates the `header_len` bytes of header JSON of a `file_len`-byte file.
pub fn parse_header(
    path: &Path,
    file_len: u64,
    header_len: u64,
    json: &[u8],
) -> Result<SafetensorsHeader, Error> {
    parse_header_json(path, file_len, header_len, json).map_err(|p| problem(path, p))
}

fn parse_header_json(
    path: &Path,
    file_len: u64,
    header_len: u64,
    json: &[u8],
) -> Result<SafetensorsHeader, HeaderProblem> {
    let raw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| HeaderProblem::BadJson(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            if let serde_json::Value::Object(m) = value {
                for (k, v) in m {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    metadata.insert(k, text);
                }
            }
            continue;
        }
        let entry: RawEntry =
            serde_json::from_value(value).map_err(|e| HeaderProblem::BadTensor {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        let [begin, end] = entry.data_offsets;
        let info = TensorInfo {
            dtype: Dtype::parse(&entry.dtype),
            shape: entry.shape,
            begin,
            end,
        };
        if begin > end {
            return Err(HeaderProblem::BadTensor {
                name,
                reason: format!("data_offsets [{begin}, {end}] run backwards"),
            });
        }
        if let Some(size) = info.dtype.size_bytes() {
            let want = info.numel().checked_mul(size);
            if want != Some(end - begin) {
                return Err(HeaderProblem::BadTensor {
                    reason: format!(
                        "{:?} {} needs {} bytes but data_offsets give {}",
                        info.shape,
                        entry.dtype,
                        want.map_or("too many".to_string(), |w| w.to_string()),
                        end - begin
                    ),
                    name,
                });
            }
        }
        tensors.insert(name, info);
    }
    let data_len = file_len - 8 - header_len;
    let needed = tensors.values().map(|t| t.end).max().unwrap_or(0);
    if needed > data_len {
        return Err(HeaderProblem::Truncated {
            needed,
            actual: data_len,
        });
    }
    if needed < data_len {
        return Err(HeaderProblem::TrailingBytes {
            expected: needed,
            actual: data_len,
        });
    }
    Ok(SafetensorsHeader {
        path: path.to_path_buf(),
        file_len,
        header_len,
        tensors,
        metadata,
    })
}

/// Names of tensors that are not weights: fp8 scales, quantisation markers, an embedded tokenizer.
pub fn is_auxiliary_tensor(name: &str) -> bool {
    const MARKERS: [&str; 3] = ["scaled_fp8", "spiece_model", "comfy_quant"];
    const SUFFIXES: [&str; 5] = [
        ".scale_weight",
        ".scale_input",
        ".weight_scale",
        ".input_scale",
        ".comfy_quant",
    ];
    MARKERS.contains(&name) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// How the weights of a component are stored, by bytes per dtype.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DtypeSummary {
    pub bytes_by_dtype: BTreeMap<Dtype, u64>,
    /// ComfyUI "fp8 scaled": fp8 weights with per-tensor scales (`scale_weight`/`weight_scale`).
    pub scaled_fp8: bool,
}

impl DtypeSummary {
    pub fn of<'a>(headers: impl IntoIterator<Item = &'a SafetensorsHeader>) -> DtypeSummary {
        let mut out = DtypeSummary::default();
        for h in headers {
            for (name, t) in &h.tensors {
                if is_auxiliary_tensor(name) {
                    if name == "scaled_fp8"
                        || name.ends_with("scale_weight")
                        || name.ends_with("weight_scale")
                    {
                        out.scaled_fp8 = true;
                    }
                    continue;
                }
                *out.bytes_by_dtype.entry(t.dtype.clone()).or_default() += t.end - t.begin;
            }
        }
        out
    }

    /// The dtype holding most of the bytes.
    pub fn dominant(&self) -> Option<&Dtype> {
        self.bytes_by_dtype
            .iter()
            .max_by_key(|(_, b)| **b)
            .map(|(d, _)| d)
    }
}

impl fmt::Display for DtypeSummary {
    /// `bf16`, `fp8_e4m3fn scaled`, or `mixed: fp16 60%, fp32 40%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.bytes_by_dtype.values().sum();
        let Some(dominant) = self.dominant() else {
            return f.write_str("no tensors");
        };
        let share = |b: u64| b as f64 / total.max(1) as f64;
        let dominant_share = share(self.bytes_by_dtype[dominant]);
        if dominant_share >= 0.9 {
            f.write_str(&dominant.short_name())?;
            if self.scaled_fp8 && dominant.is_fp8() {
                f.write_str(" scaled")?;
            }
            return Ok(());
        }
        let mut parts: Vec<(&Dtype, u64)> =
            self.bytes_by_dtype.iter().map(|(d, b)| (d, *b)).collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let listed: Vec<String> = parts
            .iter()
            .take(3)
            .map(|(d, b)| format!("{} {:.0}%", d.short_name(), share(*b) * 100.0))
            .collect();
        write!(f, "mixed: {}", listed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a safetensors file by hand: header JSON, then zero bytes for the data.
    fn write(path: &Path, tensors: &[(&str, &str, &[u64])], data_adjust: i64) {
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        for (name, dtype, shape) in tensors {
            let size = Dtype::parse(dtype).size_bytes().unwrap() * shape.iter().product::<u64>();
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}),
            );
            offset += size;
        }
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let json = serde_json::to_vec(&header).unwrap();
        let mut f = File::create(path).unwrap();
        f.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
        f.write_all(&json).unwrap();
        let data_len = (offset as i64 + data_adjust) as usize;
        f.write_all(&vec![0u8; data_len]).unwrap();
    }

    #[test]
    fn a_whole_file_is_read_without_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        write(&p, &[("w", "BF16", &[4, 3]), ("b", "F32", &[4])], 0);
        let h = read_header(&p).unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors["w"].shape, vec![4, 3]);
        assert_eq!(h.tensors["w"].dtype, Dtype::BF16);
        assert_eq!(h.metadata["format"], "pt");
        let summary = DtypeSummary::of([&h]);
        assert_eq!(summary.bytes_by_dtype[&Dtype::BF16], 24);
        assert_eq!(summary.bytes_by_dtype[&Dtype::F32], 16);
        assert_eq!(summary.to_string(), "mixed: bf16 60%, fp32 40%");
    }

    #[test]
    fn truncation_and_trailing_bytes_are_named_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.safetensors");
        write(&p, &[("w", "F16", &[10, 10])], -50);
        match read_header(&p) {
            Err(Error::Header {
                problem: HeaderProblem::Truncated { needed, actual },
                path,
            }) => {
                assert_eq!((needed, actual), (200, 150));
                assert_eq!(path, p);
            }
            other => panic!("expected truncation, got {other:?}"),
        }
        let msg = read_header(&p).unwrap_err().to_string();
        assert!(
            msg.contains("cut.safetensors") && msg.contains("50 missing"),
            "{msg}"
        );
        let p2 = dir.path().join("long.safetensors");
        write(&p2, &[("w", "F16", &[10])], 3);
        assert!(matches!(
            read_header(&p2),
            Err(Error::Header {
                problem: HeaderProblem::TrailingBytes {
                    expected: 20,
                    actual: 23
                },
                ..
            })
        ));
    }

    #[test]
    fn lfs_pointers_short_files_and_garbage_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ptr.safetensors");
        std::fs::write(
            &p,
            "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
        )
        .unwrap();
        assert!(matches!(
            read_header(&p),
            Err(Error::Header {
                problem: HeaderProblem::LfsPointer,
                ..
            })
        ));
        std::fs::write(&p, b"abc").unwrap();
        assert!(matches!(
            read_header(&p),
            Err(Error::Header {
                problem: HeaderProblem::TooShort { len: 3 },
                ..
            })
        ));
        std::fs::write(&p, b"<html>not found</html>").unwrap();
        assert!(matches!(
            read_header(&p),
            Err(Error::Header {
                problem: HeaderProblem::NotSafetensors { .. },
                ..
            })
        ));
        let mut cut = 500u64.to_le_bytes().to_vec();
        cut.extend_from_slice(b"{\"w\":");
        std::fs::write(&p, &cut).unwrap();
        assert!(matches!(
            read_header(&p),
            Err(Error::Header {
                problem: HeaderProblem::TruncatedHeader {
                    header_len: 500,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn inconsistent_entries_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        let json = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json);
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&p, &bytes).unwrap();
        let err = read_header(&p).unwrap_err().to_string();
        assert!(
            err.contains("tensor w") && err.contains("needs 16 bytes"),
            "{err}"
        );
    }

    #[test]
    fn fp8_scaled_files_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fp8.safetensors");
        write(
            &p,
            &[
                ("blocks.0.w.weight", "F8_E4M3", &[100, 100]),
                ("blocks.0.w.scale_weight", "F32", &[1]),
                ("blocks.0.norm.weight", "F32", &[100]),
                ("scaled_fp8", "F8_E4M3", &[0]),
            ],
            0,
        );
        let h = read_header(&p).unwrap();
        let s = DtypeSummary::of([&h]);
        assert!(s.scaled_fp8);
        assert_eq!(s.to_string(), "fp8_e4m3fn scaled");
    }
}
