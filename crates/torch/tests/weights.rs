use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};
use wanlora_torch::weights::{
    save_safetensors, Loader, RandomWeights, WeightError, WeightSet, WeightSource,
};

fn t(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).view(shape)
}

#[test]
fn roundtrip_keeps_values_dtypes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    let a = t(&[1.0, -2.5, 3.25, 4.0], &[2, 2]);
    let b = a.to_kind(Kind::BFloat16);
    let meta = BTreeMap::from([("step".to_string(), "12".to_string())]);
    save_safetensors(
        &p,
        &[("x.weight".into(), a.shallow_clone()), ("y".into(), b)],
        &meta,
    )
    .unwrap();
    let w = WeightSet::open(&p).unwrap();
    assert_eq!(w.metadata().get("step").map(String::as_str), Some("12"));
    let x = w.load("x.weight", Kind::Float, Device::Cpu).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(x.flatten(0, -1)).unwrap(),
        vec![1.0, -2.5, 3.25, 4.0]
    );
    assert_eq!(w.info("y").unwrap().dtype, safetensors::Dtype::BF16);
    // no temporary file is left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn fp8_scaled_weights_are_dequantised() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let w = t(&[0.5, -1.0, 2.0, 0.25], &[2, 2]);
    let scale = Tensor::from_slice(&[3.0f32]).view([]);
    let q = w.to_kind(Kind::Float8e4m3fn);
    save_safetensors(
        &p,
        &[
            ("diffusion_model.l.weight".into(), q),
            ("diffusion_model.l.scale_weight".into(), scale),
        ],
        &BTreeMap::new(),
    )
    .unwrap();
    let set = WeightSet::open(&p).unwrap().with_prefix("diffusion_model.");
    assert_eq!(
        set.names(),
        vec!["l.scale_weight".to_string(), "l.weight".to_string()]
    );
    let got = set.load("l.weight", Kind::Float, Device::Cpu).unwrap();
    let want = &w * 3.0;
    assert!(got.allclose(&want, 0.0, 1e-6, false), "{got:?}");
}

#[test]
fn sharded_folder_with_index_is_read_by_name() {
    let dir = tempfile::tempdir().unwrap();
    save_safetensors(
        &dir.path().join("s-1.safetensors"),
        &[("a".into(), t(&[1.0], &[1]))],
        &BTreeMap::new(),
    )
    .unwrap();
    save_safetensors(
        &dir.path().join("s-2.safetensors"),
        &[("b".into(), t(&[2.0, 3.0], &[2]))],
        &BTreeMap::new(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.safetensors.index.json"),
        r#"{"metadata":{"total_size":12},"weight_map":{"a":"s-1.safetensors","b":"s-2.safetensors"}}"#,
    )
    .unwrap();
    let set = WeightSet::open(dir.path()).unwrap();
    assert_eq!(
        set.load("b", Kind::Float, Device::Cpu)
            .unwrap()
            .double_value(&[1]),
        3.0
    );
    std::fs::remove_file(dir.path().join("s-2.safetensors")).unwrap();
    let err = WeightSet::open(dir.path()).err().unwrap();
    assert!(matches!(err, WeightError::MissingShard { .. }), "{err}");
}

#[test]
fn truncated_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.safetensors");
    save_safetensors(
        &p,
        &[(
            "a".into(),
            Tensor::ones([64, 64], (Kind::Float, Device::Cpu)),
        )],
        &BTreeMap::new(),
    )
    .unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let err = WeightSet::open(&p).err().unwrap().to_string();
    assert!(
        err.contains("big.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn loader_lists_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    save_safetensors(&p, &[("a".into(), t(&[1.0, 2.0], &[2]))], &BTreeMap::new()).unwrap();
    let set = WeightSet::open(&p).unwrap();
    let loader = Loader::new(&set, Kind::Float, Device::Cpu);
    let _ = loader.get("a", &[3]);
    let _ = loader.get("b", &[2]);
    let err = loader
        .finish(|_| Some("this looks like another model".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("a: shape [2], expected [3]"), "{err}");
    assert!(err.contains("missing b [2]"), "{err}");
    assert!(err.contains("hint: this looks like another model"), "{err}");
}

#[test]
fn random_weights_are_nonzero_and_repeatable() {
    let src = RandomWeights { std: 0.02, seed: 7 };
    let a = src
        .load("blocks.0.q.weight", &[8, 8], Kind::Float, Device::Cpu)
        .unwrap();
    let b = src
        .load("blocks.0.q.weight", &[8, 8], Kind::Float, Device::Cpu)
        .unwrap();
    assert!(a.equal(&b));
    assert!(a.abs().min().double_value(&[]) > 0.0);
    let n = src
        .load("norm.weight", &[8], Kind::Float, Device::Cpu)
        .unwrap();
    assert!((n.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.05);
}

/// A failed atomic write leaves neither the target nor its temporary file behind (on a full disk
/// the temporary file would keep it full).
#[test]
fn a_failed_atomic_write_removes_its_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a folder that is not empty: writing the temporary file works, the rename fails.
    let target = dir.path().join("status.json");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    let err = wanlora_torch::weights::write_atomic(&target, b"{}").unwrap_err();
    assert!(err.to_string().contains("status.json"), "{err}");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["status.json"], "a temporary file was left");
}
