//! Weights: memory-mapped safetensors (single files, sharded folders with their index), moved to the
//! device tensor by tensor with no second full copy in host memory; ComfyUI "fp8_scaled" weights are
//! dequantised on the way; writing safetensors atomically with metadata.

use safetensors::tensor::{Dtype, Metadata};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file ({reason}); the file may be truncated or not a safetensors file — download it again")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: no *.safetensors file and no *.safetensors.index.json in this folder")]
    EmptyFolder { path: PathBuf },
    #[error("{path}: index names shard {shard}, which is missing")]
    MissingShard { path: PathBuf, shard: String },
    #[error("tensor {name} has dtype {dtype:?}, which wanlora cannot load")]
    UnsupportedDtype { name: String, dtype: Dtype },
    #[error("tensor {name} not found in {source_desc}")]
    Missing { name: String, source_desc: String },
    #[error("tensor {name} in {source_desc} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        source_desc: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("{0}")]
    Torch(#[from] tch::TchError),
    #[error("{}", format_problems(.source_desc, .problems, .hint))]
    Many {
        source_desc: String,
        problems: Vec<String>,
        hint: Option<String>,
    },
}

fn format_problems(source: &str, problems: &[String], hint: &Option<String>) -> String {
    let shown = 25;
    let mut s = format!("{source}: {} tensor problem(s):", problems.len());
    for p in problems.iter().take(shown) {
        s.push_str("\n  - ");
        s.push_str(p);
    }
    if problems.len() > shown {
        s.push_str(&format!("\n  … and {} more", problems.len() - shown));
    }
    if let Some(h) = hint {
        s.push_str("\nhint: ");
        s.push_str(h);
    }
    s
}

/// The tch kind of a safetensors dtype, when libtorch has one.
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F8_E4M3 => Kind::Float8e4m3fn,
        Dtype::F8_E5M2 => Kind::Float8e5m2,
        _ => return None,
    })
}

/// The safetensors dtype for a tch kind.
pub fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Float8e4m3fn => Dtype::F8_E4M3,
        Kind::Float8e5m2 => Dtype::F8_E5M2,
        _ => return None,
    })
}

/// Shape and dtype of a stored tensor, known without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<i64>,
}

/// One memory-mapped safetensors file.
pub struct SafeTensorsFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
    tensors: HashMap<String, (TensorInfo, (usize, usize))>,
    metadata: HashMap<String, String>,
}

impl SafeTensorsFile {
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        let io = |source| WeightError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the file is opened read-only; wanlora never writes model files while reading them.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let (header_len, meta): (usize, Metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| WeightError::Format {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let data_start = 8 + header_len;
        let data_len = mmap.len().saturating_sub(data_start);
        if meta.data_len() > data_len {
            return Err(WeightError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "header promises {} bytes of tensor data but the file holds {data_len}",
                    meta.data_len()
                ),
            });
        }
        let tensors = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let ti = TensorInfo {
                    dtype: info.dtype,
                    shape: info.shape.iter().map(|&d| d as i64).collect(),
                };
                (name, (ti, info.data_offsets))
            })
            .collect();
        Ok(SafeTensorsFile {
            path: path.to_path_buf(),
            metadata: meta.metadata().clone().unwrap_or_default(),
            mmap,
            data_start,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|(i, _)| i)
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The raw bytes of a tensor inside the map.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensors
            .get(name)
            .map(|(_, (s, e))| &self.mmap[self.data_start + s..self.data_start + e])
    }

    /// Reads one tensor in its stored dtype onto `device`. The data goes from the page cache straight
    /// into the destination (one copy), so loading a model never holds a second copy in host memory.
    pub fn tensor_raw(&self, name: &str, device: Device) -> Result<Tensor, WeightError> {
        let (info, _) = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            source_desc: self.path.display().to_string(),
        })?;
        let kind = kind_of(info.dtype).ok_or(WeightError::UnsupportedDtype {
            name: name.to_string(),
            dtype: info.dtype,
        })?;
        let bytes = self.bytes(name).expect("name was found above");
        let elt = kind.elt_size_in_bytes();
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(elt.max(1));
        let tensor = if aligned {
            // SAFETY: the view points into the live mmap with the right length for shape×kind; it is
            // copied (to the device, or into an owned CPU tensor) before this function returns.
            let view = unsafe {
                Tensor::f_from_blob(bytes.as_ptr(), &info.shape, &[], kind, Device::Cpu)?
            };
            view.f_to_device_(device, kind, false, true)?
        } else {
            Tensor::f_from_data_size(bytes, &info.shape, kind)?.f_to_device(device)?
        };
        Ok(tensor)
    }
}

/// A model's weights: one file, or a folder of shards (with or without an index), read by name.
/// An optional key prefix (ComfyUI's `diffusion_model.`) is stripped transparently.
pub struct WeightSet {
    description: String,
    files: Vec<SafeTensorsFile>,
    by_name: HashMap<String, usize>,
    prefix: String,
}

impl WeightSet {
    /// Opens a `.safetensors` file, or a folder holding `*.safetensors.index.json` or `*.safetensors`.
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        let files = if path.is_dir() {
            Self::folder_files(path)?
        } else {
            vec![SafeTensorsFile::open(path)?]
        };
        let mut by_name = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for n in f.names() {
                by_name.insert(n.to_string(), i);
            }
        }
        Ok(WeightSet {
            description: path.display().to_string(),
            files,
            by_name,
            prefix: String::new(),
        })
    }

    fn folder_files(dir: &Path) -> Result<Vec<SafeTensorsFile>, WeightError> {
        let io = |source| WeightError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        if let Some(index) = entries
            .iter()
            .find(|p| p.to_string_lossy().ends_with(".safetensors.index.json"))
        {
            let text = std::fs::read_to_string(index).map_err(|source| WeightError::Io {
                path: index.clone(),
                source,
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| WeightError::Format {
                    path: index.clone(),
                    reason: e.to_string(),
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| WeightError::Format {
                    path: index.clone(),
                    reason: "no weight_map object".into(),
                })?;
            let shards: std::collections::BTreeSet<&str> =
                map.values().filter_map(|v| v.as_str()).collect();
            return shards
                .into_iter()
                .map(|s| {
                    let p = dir.join(s);
                    if !p.exists() {
                        return Err(WeightError::MissingShard {
                            path: index.clone(),
                            shard: s.to_string(),
                        });
                    }
                    SafeTensorsFile::open(&p)
                })
                .collect();
        }
        let files: Vec<_> = entries
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .map(|p| SafeTensorsFile::open(p))
            .collect::<Result<_, _>>()?;
        if files.is_empty() {
            return Err(WeightError::EmptyFolder {
                path: dir.to_path_buf(),
            });
        }
        Ok(files)
    }

    /// Reads names as `prefix + name` (e.g. ComfyUI's `diffusion_model.`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Names as callers see them (prefix removed); names outside the prefix are left out.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_name
            .keys()
            .filter_map(|n| n.strip_prefix(&self.prefix).map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Every stored name, prefix included.
    pub fn raw_names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        let full = format!("{}{name}", self.prefix);
        self.by_name
            .get(&full)
            .and_then(|&i| self.files[i].info(&full))
    }

    /// Metadata of the first file (LoRA files and single checkpoints keep theirs there).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.files
            .first()
            .map(|f| f.metadata().clone())
            .unwrap_or_default()
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.mmap.len() as u64).sum()
    }

    /// Loads `name` as `kind` on `device`. Float8 weights with a ComfyUI `scale_weight` sibling are
    /// dequantised (`w · scale`) on the device.
    pub fn load(&self, name: &str, kind: Kind, device: Device) -> Result<Tensor, WeightError> {
        let full = format!("{}{name}", self.prefix);
        let file = self
            .by_name
            .get(&full)
            .map(|&i| &self.files[i])
            .ok_or_else(|| WeightError::Missing {
                name: name.to_string(),
                source_desc: self.description.clone(),
            })?;
        let raw = file.tensor_raw(&full, device)?;
        let scale_name = full
            .strip_suffix(".weight")
            .map(|base| format!("{base}.scale_weight"));
        let scale = match scale_name
            .as_deref()
            .and_then(|s| self.by_name.get(s).map(|&i| (s, i)))
        {
            Some((s, i)) if raw.kind() == Kind::Float8e4m3fn || raw.kind() == Kind::Float8e5m2 => {
                Some(self.files[i].tensor_raw(s, device)?)
            }
            _ => None,
        };
        Ok(match scale {
            Some(scale) => raw
                .f_to_kind(Kind::Float)?
                .f_mul(&scale.f_to_kind(Kind::Float)?)?
                .f_to_kind(kind)?,
            None => raw.f_to_kind(kind)?,
        })
    }
}

/// A weight kept in its stored float8 e4m3fn form: `codes` with the `scale` that multiplies them
/// (one fp32 value for the tensor, or one per output channel). ComfyUI's "fp8_scaled" files store
/// `name` as F8_E4M3 with a `scale_weight` sibling; plain F8_E4M3 files have scale 1.
#[derive(Debug)]
pub struct Fp8Stored {
    pub codes: Tensor,
    /// fp32, 0-d / `[1]` (per tensor) or `[out]` / `[out, 1]` (per output channel).
    pub scale: Tensor,
}

impl WeightSet {
    /// `name` as stored, when it is float8 e4m3fn: its codes on `device` and the fp32 scale of
    /// its ComfyUI `scale_weight` sibling (1 when there is none). `None` when the tensor is stored
    /// in another dtype (callers then [`WeightSet::load`] it).
    pub fn load_fp8(&self, name: &str, device: Device) -> Result<Option<Fp8Stored>, WeightError> {
        let full = format!("{}{name}", self.prefix);
        let Some(&file) = self.by_name.get(&full) else {
            return Err(WeightError::Missing {
                name: name.to_string(),
                source_desc: self.description.clone(),
            });
        };
        let file = &self.files[file];
        if file.info(&full).map(|i| i.dtype) != Some(Dtype::F8_E4M3) {
            return Ok(None);
        }
        let codes = file.tensor_raw(&full, device)?;
        let scale_name = full
            .strip_suffix(".weight")
            .map(|base| format!("{base}.scale_weight"));
        let scale = match scale_name
            .as_deref()
            .and_then(|s| self.by_name.get(s).map(|&i| (s, i)))
        {
            Some((s, i)) => self.files[i]
                .tensor_raw(s, device)?
                .f_to_kind(Kind::Float)?,
            None => Tensor::f_ones([], (Kind::Float, device))?,
        };
        Ok(Some(Fp8Stored { codes, scale }))
    }
}

/// Where a model's tensors come from: files, random values made in place (benchmarks and the demo),
/// or tensors already in memory (tests).
pub trait WeightSource {
    /// The tensor `name` as `kind` on `device`, or an error naming it.
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError>;
    /// Stored shape, when known without loading (used to infer a model's configuration).
    fn shape_of(&self, name: &str) -> Option<Vec<i64>>;
    /// Every name the source holds (empty for generated sources).
    fn names(&self) -> Vec<String>;
    /// A short description for error messages: a path, or "random weights".
    fn describe(&self) -> String;
    /// `name` in its stored float8 e4m3fn form (codes and scale), when the source holds it so;
    /// `None` otherwise, and for sources that hold no float8 weights (the default).
    fn load_fp8(
        &self,
        _name: &str,
        _shape: &[i64],
        _device: Device,
    ) -> Result<Option<Fp8Stored>, WeightError> {
        Ok(None)
    }
}

impl<T: WeightSource + ?Sized> WeightSource for &T {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        (**self).load(name, shape, kind, device)
    }
    fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        (**self).shape_of(name)
    }
    fn names(&self) -> Vec<String> {
        (**self).names()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn load_fp8(
        &self,
        name: &str,
        shape: &[i64],
        device: Device,
    ) -> Result<Option<Fp8Stored>, WeightError> {
        (**self).load_fp8(name, shape, device)
    }
}

/// Maps a model's name to the name a file stores it under.
pub type StoredName = Box<dyn Fn(&str) -> String>;
/// Maps a stored name back to the model's name (`None`: not one of the model's tensors).
pub type ModelName = Box<dyn Fn(&str) -> Option<String>>;

/// A weight source read by a model's own names, whatever names the file uses: the one renaming
/// view (transformer, text encoder and VAE files come in Wan's, ComfyUI's, diffusers' and
/// transformers' namings, with or without a wrapper prefix). Errors name the tensor as the model
/// asked for it and as the file stores it.
pub struct Renamed<S> {
    inner: S,
    stored: StoredName,
    listed: Option<ModelName>,
}

impl<S: WeightSource> Renamed<S> {
    /// `inner` read through `stored`; `names()` lists the inner names as they are.
    pub fn new(inner: S, stored: impl Fn(&str) -> String + 'static) -> Self {
        Renamed {
            inner,
            stored: Box::new(stored),
            listed: None,
        }
    }

    /// `names()` lists the model's names, from the stored ones through `listed`.
    pub fn listing(mut self, listed: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.listed = Some(Box::new(listed));
        self
    }

    /// The name the file stores the model's tensor `name` under.
    pub fn stored_name(&self, name: &str) -> String {
        (self.stored)(name)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn asked(&self, name: &str, stored: &str) -> String {
        if name == stored {
            name.to_string()
        } else {
            format!("{name} (stored as {stored})")
        }
    }
}

impl<S: WeightSource> WeightSource for Renamed<S> {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        let stored = self.stored_name(name);
        self.inner
            .load(&stored, shape, kind, device)
            .map_err(|e| match e {
                WeightError::Missing { source_desc, .. } => WeightError::Missing {
                    name: self.asked(name, &stored),
                    source_desc,
                },
                WeightError::Shape {
                    source_desc,
                    found,
                    expected,
                    ..
                } => WeightError::Shape {
                    name: self.asked(name, &stored),
                    source_desc,
                    found,
                    expected,
                },
                other => other,
            })
    }
    fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.inner.shape_of(&self.stored_name(name))
    }
    fn names(&self) -> Vec<String> {
        let names = self.inner.names();
        match &self.listed {
            Some(listed) => names.iter().filter_map(|n| listed(n)).collect(),
            None => names,
        }
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn load_fp8(
        &self,
        name: &str,
        shape: &[i64],
        device: Device,
    ) -> Result<Option<Fp8Stored>, WeightError> {
        self.inner.load_fp8(&self.stored_name(name), shape, device)
    }
}

impl WeightSource for WeightSet {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        let found = self
            .info(name)
            .ok_or_else(|| WeightError::Missing {
                name: name.to_string(),
                source_desc: self.description.clone(),
            })?
            .shape
            .clone();
        if found != shape {
            return Err(WeightError::Shape {
                name: name.to_string(),
                source_desc: self.description.clone(),
                found,
                expected: shape.to_vec(),
            });
        }
        WeightSet::load(self, name, kind, device)
    }
    fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.info(name).map(|i| i.shape.clone())
    }
    fn names(&self) -> Vec<String> {
        WeightSet::names(self)
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
    fn load_fp8(
        &self,
        name: &str,
        shape: &[i64],
        device: Device,
    ) -> Result<Option<Fp8Stored>, WeightError> {
        match self.info(name) {
            Some(info) if info.shape != shape => Err(WeightError::Shape {
                name: name.to_string(),
                source_desc: self.description.clone(),
                found: info.shape.clone(),
                expected: shape.to_vec(),
            }),
            _ => WeightSet::load_fp8(self, name, device),
        }
    }
}

/// Random weights made directly on the device: N(0, std²) for matrices and convolutions, 1 + N(0,
/// std²) for norm scales, N(0, std²) for biases — never zeros, so benchmarks exercise real data.
pub struct RandomWeights {
    pub std: f64,
    pub seed: i64,
}

impl WeightSource for RandomWeights {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        // A per-name seed keeps the values independent of load order.
        let h = name
            .bytes()
            .fold(self.seed as u64 ^ 0xcbf29ce484222325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        let is_norm = name.contains("norm") || name.ends_with("gamma");
        let t = if device == Device::Cpu {
            // A stream of its own: tests that load random weights in parallel threads get the
            // same values whatever else draws random numbers meanwhile.
            crate::rng::torch_randn(h >> 1, shape, device)?
        } else {
            // Drawing a large model on the CPU would take minutes; on an accelerator the global
            // generator is used, under a lock so that two loads do not interleave.
            static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _guard = GLOBAL_GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
            tch::manual_seed((h >> 1) as i64);
            Tensor::f_randn(shape, (Kind::Float, device))?
        }
        .f_mul_scalar(self.std)?;
        let t = if is_norm && shape.len() <= 1 {
            t.f_add_scalar(1.0)?
        } else {
            t
        };
        Ok(t.f_to_kind(kind)?)
    }
    fn shape_of(&self, _name: &str) -> Option<Vec<i64>> {
        None
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn describe(&self) -> String {
        format!("random weights (std {}, seed {})", self.std, self.seed)
    }
}

/// Tensors held in memory under their names (tests, LoRA merges).
pub struct TensorMap(pub BTreeMap<String, Tensor>);

impl WeightSource for TensorMap {
    fn load(
        &self,
        name: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, WeightError> {
        let t = self.0.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            source_desc: "in-memory tensors".into(),
        })?;
        if t.size() != shape {
            return Err(WeightError::Shape {
                name: name.to_string(),
                source_desc: "in-memory tensors".into(),
                found: t.size(),
                expected: shape.to_vec(),
            });
        }
        Ok(t.f_to_device(device)?.f_to_kind(kind)?)
    }
    fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.0.get(name).map(|t| t.size())
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn describe(&self) -> String {
        "in-memory tensors".into()
    }
}

/// Builds a model from a source, collecting every missing or mis-shaped tensor instead of stopping at
/// the first, so one error lists them all. Failed loads return an empty placeholder; call
/// [`Loader::finish`] before using the model.
pub struct Loader<'a> {
    source: &'a dyn WeightSource,
    pub kind: Kind,
    pub device: Device,
    problems: RefCell<Vec<String>>,
    fatal: RefCell<Option<WeightError>>,
    used: RefCell<Vec<String>>,
}

impl<'a> Loader<'a> {
    pub fn new(source: &'a dyn WeightSource, kind: Kind, device: Device) -> Self {
        Loader {
            source,
            kind,
            device,
            problems: RefCell::new(Vec::new()),
            fatal: RefCell::new(None),
            used: RefCell::new(Vec::new()),
        }
    }

    pub fn source(&self) -> &dyn WeightSource {
        self.source
    }

    /// `name` with `shape` in the loader's kind.
    pub fn get(&self, name: &str, shape: &[i64]) -> Tensor {
        self.get_as(name, shape, self.kind)
    }

    /// `name` with `shape` in an explicit kind (e.g. fp32 for modulation tables).
    pub fn get_as(&self, name: &str, shape: &[i64], kind: Kind) -> Tensor {
        self.used.borrow_mut().push(name.to_string());
        match self.source.load(name, shape, kind, self.device) {
            Ok(t) => t,
            Err(e @ (WeightError::Missing { .. } | WeightError::Shape { .. })) => {
                self.problems.borrow_mut().push(match e {
                    WeightError::Missing { name, .. } => format!("missing {name} {shape:?}"),
                    WeightError::Shape {
                        name,
                        found,
                        expected,
                        ..
                    } => format!("{name}: shape {found:?}, expected {expected:?}"),
                    _ => unreachable!(),
                });
                Tensor::empty([0], (kind, Device::Cpu))
            }
            Err(e) => {
                self.fatal.borrow_mut().get_or_insert(e);
                Tensor::empty([0], (kind, Device::Cpu))
            }
        }
    }

    /// `name` with `shape` in its stored float8 form, when the source holds it so (see
    /// [`WeightSource::load_fp8`]); `None` otherwise. A missing or mis-shaped tensor also gives
    /// `None`: the caller's fallback [`Loader::get`] records that problem.
    pub fn get_fp8(&self, name: &str, shape: &[i64]) -> Option<Fp8Stored> {
        match self.source.load_fp8(name, shape, self.device) {
            Ok(Some(stored)) => {
                self.used.borrow_mut().push(name.to_string());
                Some(stored)
            }
            Ok(None) | Err(WeightError::Missing { .. } | WeightError::Shape { .. }) => None,
            Err(e) => {
                self.fatal.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    /// Records an error that makes the model unusable (e.g. a failed conversion of a loaded
    /// tensor); [`Loader::finish`] returns the first one recorded.
    pub fn fail(&self, error: WeightError) {
        self.fatal.borrow_mut().get_or_insert(error);
    }

    /// Names loaded so far.
    pub fn used_names(&self) -> Vec<String> {
        self.used.borrow().clone()
    }

    /// Ok when every tensor loaded; otherwise one error listing every problem, with `hint`.
    pub fn finish(
        self,
        hint: impl FnOnce(&dyn WeightSource) -> Option<String>,
    ) -> Result<(), WeightError> {
        if let Some(e) = self.fatal.into_inner() {
            return Err(e);
        }
        let problems = self.problems.into_inner();
        if problems.is_empty() {
            return Ok(());
        }
        Err(WeightError::Many {
            source_desc: self.source.describe(),
            hint: hint(self.source),
            problems,
        })
    }
}

/// Bytes of a CPU copy of `t` (contiguous, stored dtype).
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, WeightError> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut buf, numel)?;
    Ok(buf)
}

/// Writes `tensors` with `metadata` to `path` through a temporary file in the same folder, fsync and
/// rename: a crash leaves either the old file or the complete new one, never a half-written file.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightError> {
    struct Raw {
        dtype: Dtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    }
    impl safetensors::View for &Raw {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.data)
        }
        fn data_len(&self) -> usize {
            self.data.len()
        }
    }
    let mut raws = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind()).ok_or_else(|| WeightError::Format {
            path: path.to_path_buf(),
            reason: format!("tensor {name} has kind {:?}, not storable", t.kind()),
        })?;
        raws.push((
            name.clone(),
            Raw {
                dtype,
                shape: t.size().iter().map(|&d| d as usize).collect(),
                data: tensor_bytes(t)?,
            },
        ));
    }
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(raws.iter().map(|(n, r)| (n.as_str(), r)), Some(meta))
        .map_err(|e| WeightError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically: `wanlora_spec::atomic::write_atomically` (temporary file
/// in the same folder, fsync, rename; the temporary file removed on failure) with this crate's error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WeightError> {
    wanlora_spec::atomic::write_atomically(path, bytes).map_err(|source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    })
}
