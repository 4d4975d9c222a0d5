//! Named tensors as plain bytes: what encoders return and what a cache entry holds, stored as one
//! safetensors file.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Element types the cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TensorDtype {
    F32,
    BF16,
    F16,
}

impl TensorDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::BF16 | Self::F16 => 2,
        }
    }

    fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            Self::F32 => safetensors::Dtype::F32,
            Self::BF16 => safetensors::Dtype::BF16,
            Self::F16 => safetensors::Dtype::F16,
        }
    }

    fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        match dtype {
            safetensors::Dtype::F32 => Some(Self::F32),
            safetensors::Dtype::BF16 => Some(Self::BF16),
            safetensors::Dtype::F16 => Some(Self::F16),
            _ => None,
        }
    }
}

/// One tensor: name, element type, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl NamedTensor {
    /// Checks that `data` has `product(shape) · dtype.size()` bytes.
    pub fn new(
        name: impl Into<String>,
        dtype: TensorDtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    ) -> Result<Self, String> {
        let name = name.into();
        let expected = shape.iter().product::<usize>() * dtype.size();
        if data.len() != expected {
            return Err(format!(
                "tensor {name}: {} bytes for shape {shape:?} of {dtype:?}, expected {expected}",
                data.len()
            ));
        }
        Ok(Self {
            name,
            dtype,
            shape,
            data,
        })
    }

    /// An f32 tensor from values (length must match the shape).
    pub fn from_f32(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: &[f32],
    ) -> Result<Self, String> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(name, TensorDtype::F32, shape, data)
    }

    /// The values as f32 (bf16 and f16 widened).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            TensorDtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            TensorDtype::BF16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            TensorDtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

impl safetensors::View for &NamedTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A set of tensors with distinct names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamedTensors {
    pub tensors: Vec<NamedTensor>,
}

impl NamedTensors {
    pub fn new(tensors: Vec<NamedTensor>) -> Self {
        Self { tensors }
    }

    /// Orders the tensors by name, the order a cache read returns them in.
    pub fn sort_by_name(&mut self) {
        self.tensors.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The safetensors file bytes, with string `metadata` in the header.
    pub fn to_safetensors(&self, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.tensors.iter().find(|t| !seen.insert(&t.name)) {
            return Err(format!("two tensors are named {}", dup.name));
        }
        let info: HashMap<String, String> = metadata.clone().into_iter().collect();
        safetensors::tensor::serialize(self.tensors.iter().map(|t| (t.name.clone(), t)), Some(info))
            .map_err(|e| e.to_string())
    }

    /// Parses safetensors bytes: the tensors (sorted by name) and the header metadata.
    pub fn from_safetensors(bytes: &[u8]) -> Result<(Self, BTreeMap<String, String>), String> {
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let mut tensors = Vec::new();
        for (name, view) in file.tensors() {
            let dtype = TensorDtype::from_safetensors(view.dtype())
                .ok_or_else(|| format!("tensor {name} has unsupported type {:?}", view.dtype()))?;
            tensors.push(NamedTensor::new(
                name,
                dtype,
                view.shape().to_vec(),
                view.data().to_vec(),
            )?);
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((Self { tensors }, metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_names_types_shapes_values_and_metadata() {
        let bf: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let set = NamedTensors::new(vec![
            NamedTensor::from_f32("latent", vec![2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, -5.5]).unwrap(),
            NamedTensor::new("cond", TensorDtype::BF16, vec![2], bf).unwrap(),
        ]);
        let mut meta = BTreeMap::new();
        meta.insert("key".to_string(), "abc".to_string());
        let bytes = set.to_safetensors(&meta).unwrap();
        let (back, back_meta) = NamedTensors::from_safetensors(&bytes).unwrap();
        assert_eq!(back_meta.get("key").map(String::as_str), Some("abc"));
        assert_eq!(back.get("latent").unwrap().shape, vec![2, 3]);
        assert_eq!(back.get("latent").unwrap().to_f32()[5], -5.5);
        assert_eq!(back.get("cond").unwrap().dtype, TensorDtype::BF16);
        assert_eq!(back.get("cond").unwrap().to_f32(), vec![1.5, -2.0]);
    }

    #[test]
    fn shape_and_names_are_checked() {
        assert!(NamedTensor::new("x", TensorDtype::F16, vec![3], vec![0; 5]).is_err());
        let t = NamedTensor::from_f32("x", vec![1], &[1.0]).unwrap();
        let dup = NamedTensors::new(vec![t.clone(), t]);
        assert!(dup.to_safetensors(&BTreeMap::new()).is_err());
        assert!(NamedTensors::from_safetensors(b"not a file").is_err());
    }
}
