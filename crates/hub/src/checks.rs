//! Checks before a long run: every file a job loads is read for its header only, and is rejected
//! with the reason when it is damaged (truncated, an LFS pointer, inconsistent shards) or is the
//! wrong model (Wan 2.1, text-to-video, TI2V-5B, a LoRA, T5 instead of umT5, the Wan 2.2 VAE…).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wanlora_config::ModelArch;

use crate::client::HubClient;
use crate::config::HubConfig;
use crate::error::Error;
use crate::identify::{identify, ModelKind, TensorSet, WanTransformerShape};
use crate::resolve::{ComponentFile, ResolvedComponent, ResolvedModel, State};
use crate::safetensors_header::{read_header, DtypeSummary, SafetensorsHeader};
use crate::spec::{Component, Stage};

/// The sizes of one Wan 2.2 A14B expert (wan-reference §1.1); `in_channels` is the I2V value, the
/// job's arch decides it (`ModelArch::facts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertSizes {
    pub dim: u64,
    pub layers: u64,
    pub in_channels: u64,
    pub out_channels: u64,
    pub ffn_dim: u64,
    pub text_dim: u64,
}

/// The sizes of the Wan 2.2 TI2V-5B transformer (diffusers' `transformer/config.json`).
pub const TI2V_5B: ExpertSizes = ExpertSizes {
    dim: 3072,
    layers: 30,
    in_channels: 48,
    out_channels: 48,
    ffn_dim: 14336,
    text_dim: 4096,
};

pub const A14B_EXPERT: ExpertSizes = ExpertSizes {
    dim: 5120,
    layers: 40,
    in_channels: 36,
    out_channels: 16,
    ffn_dim: 13824,
    text_dim: 4096,
};

/// umT5-XXL encoder sizes (wan-reference §7).
pub const UMT5_XXL_D_MODEL: u64 = 4096;
pub const UMT5_XXL_LAYERS: u64 = 24;
pub const UMT5_XXL_VOCAB: u64 = 256_384;
/// Wan 2.1 VAE sizes (wan-reference §6).
pub const WAN21_VAE_Z_DIM: u64 = 16;
pub const WAN21_VAE_BASE_DIM: u64 = 96;
/// umT5's SentencePiece vocabulary has about 256k pieces; T5's has 32k.
const UMT5_TOKENIZER_MIN_PIECES: u64 = 250_000;

/// What the checks insist on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Require the real A14B sizes (dim 5120, 40 blocks, umT5-XXL, VAE width 96). Turn off for
    /// the small random test models: then only the architecture is checked (tensor names, the
    /// I2V channel layout `in = 2·out + 4`, umT5's per-layer position bias, a 3-D VAE).
    pub exact_sizes: bool,
    /// The variant the job trains: its experts' input channels (36 for I2V, 16 for T2V) are required,
    /// so a T2V expert given to an I2V job (or the reverse) is named before anything runs.
    pub arch: ModelArch,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            exact_sizes: true,
            arch: ModelArch::default(),
        }
    }
}

/// A component that must not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub component: Component,
    /// `model.key: value` that brought it in.
    pub source: String,
    /// The offending file, when one file is to blame.
    pub file: Option<PathBuf>,
    pub reason: String,
    pub fix: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.component, self.source)?;
        if let Some(file) = &self.file {
            write!(f, ": {}", file.display())?;
        }
        write!(f, " {}", self.reason)?;
        if !self.fix.is_empty() {
            write!(f, ". {}", self.fix)?;
        }
        Ok(())
    }
}

/// One component's verdict: what it is, or why it must not be used.
pub type ComponentCheck = (Component, Result<ComponentReport, CheckFailure>);

/// What a component turned out to be.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    pub component: Component,
    pub kind: ModelKind,
    /// Storage types of the weights (none for the tokenizer).
    pub dtypes: Option<DtypeSummary>,
    pub bytes: u64,
    pub files: usize,
    /// Things that look wrong but may be intended.
    pub warnings: Vec<String>,
}

struct Checker<'a> {
    rc: &'a ResolvedComponent,
    options: CheckOptions,
    /// The weight files, as named in messages (paths, or `org/name@commit/file` before download).
    files: Vec<PathBuf>,
}

impl Checker<'_> {
    fn fail(
        &self,
        file: Option<PathBuf>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> CheckFailure {
        CheckFailure {
            component: self.rc.component,
            source: self.rc.source_label(),
            file,
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// The single file to name in a message: the file itself, or the folder of shards.
    fn blame(&self) -> Option<PathBuf> {
        match self.files.as_slice() {
            [one] => Some(one.clone()),
            [first, ..] => first.parent().map(|p| p.to_path_buf()),
            [] => None,
        }
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TokenizerJson {
    model: TokenizerModel,
}

#[derive(Deserialize)]
struct TokenizerModel {
    #[serde(rename = "type")]
    model_type: Option<String>,
    vocab: Option<serde_json::Value>,
}

/// Reads the headers of a ready component and checks it is what its place in the job needs.
pub fn check_component(
    rc: &ResolvedComponent,
    options: &CheckOptions,
) -> Result<ComponentReport, CheckFailure> {
    let checker = Checker {
        rc,
        options: *options,
        files: rc.weight_files(),
    };
    if rc.component == Component::Tokenizer {
        return checker.tokenizer();
    }
    if checker.files.is_empty() {
        return Err(checker.fail(
            None,
            "has no safetensors files on disk",
            "fetch the model first",
        ));
    }
    let mut headers = Vec::with_capacity(checker.files.len());
    for path in &checker.files {
        headers.push(read_header(path).map_err(|e| checker.unreadable(path, e))?);
    }
    checker.index_matches_shards(&headers)?;
    checker.judge(&headers)
}

/// Checks a component that is still on the hub from its headers, read with range requests
/// (files already on disk are read locally). The tokenizer is not checked before download.
///
/// `Ok(None)`: nothing to check this way. `Err`: the hub could not be asked (no access, no
/// network), which is not a verdict on the files.
fn check_component_on_hub(
    rc: &ResolvedComponent,
    client: &HubClient,
    options: &CheckOptions,
) -> Result<Option<Result<ComponentReport, CheckFailure>>, Error> {
    if !rc.component.has_weights() {
        return Ok(None);
    }
    let weights: Vec<&ComponentFile> = rc
        .files
        .iter()
        .filter(|f| f.name.ends_with(".safetensors"))
        .collect();
    let mut files = Vec::new();
    let mut sources = Vec::new();
    for f in &weights {
        match (&f.path, rc.downloads.iter().find(|d| d.file.path == f.name)) {
            (Some(path), _) => {
                files.push(path.clone());
                sources.push(None);
            }
            (None, Some(d)) => {
                let commit = &d.commit[..d.commit.len().min(8)];
                files.push(PathBuf::from(format!(
                    "{}@{commit}/{}",
                    d.repo_id, d.file.path
                )));
                sources.push(Some(d));
            }
            (None, None) => return Ok(None),
        }
    }
    let checker = Checker {
        rc,
        options: *options,
        files,
    };
    let mut headers = Vec::with_capacity(weights.len());
    for (label, source) in checker.files.iter().zip(&sources) {
        let header = match source {
            None => read_header(label),
            Some(d) => client.remote_header(&d.repo_id, &d.commit, &d.file.path, d.file.size),
        };
        match header {
            Ok(h) => headers.push(h),
            Err(e @ Error::Header { .. }) => return Ok(Some(Err(checker.unreadable(label, e)))),
            Err(e) if source.is_none() => return Ok(Some(Err(checker.unreadable(label, e)))),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(checker.judge(&headers)))
}

impl Checker<'_> {
    fn unreadable(&self, file: &Path, e: Error) -> CheckFailure {
        match e {
            Error::Header { problem, .. } => {
                self.fail(Some(file.to_path_buf()), problem.to_string(), "")
            }
            other => self.fail(
                Some(file.to_path_buf()),
                format!("cannot be read: {other}"),
                "",
            ),
        }
    }

    /// Identifies the weights from their headers and checks them against the component's role.
    fn judge(&self, headers: &[SafetensorsHeader]) -> Result<ComponentReport, CheckFailure> {
        let set = TensorSet::from_headers(headers);
        let kind = identify(&set);
        let mut warnings = Vec::new();
        match self.rc.component {
            Component::HighNoiseExpert | Component::LowNoiseExpert => {
                self.expert(&kind)?;
                warnings.extend(self.expert_name_hint(&self.files));
            }
            Component::TextEncoder => warnings.extend(self.text_encoder(&kind)?),
            Component::Vae => self.vae(&kind)?,
            Component::Tokenizer => {}
        }
        Ok(ComponentReport {
            component: self.rc.component,
            kind,
            dtypes: Some(DtypeSummary::of(headers)),
            bytes: self.rc.total_bytes(),
            files: self.rc.files.len(),
            warnings,
        })
    }
}

impl Checker<'_> {
    /// Every tensor the shard index promises is in the shard it names.
    fn index_matches_shards(&self, headers: &[SafetensorsHeader]) -> Result<(), CheckFailure> {
        let Some(index_path) = self.rc.index_file() else {
            return Ok(());
        };
        let index: ShardIndex = std::fs::read(&index_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| {
                self.fail(
                    Some(index_path.clone()),
                    format!("cannot be read ({e})"),
                    "get the folder again",
                )
            })?;
        let by_name: HashMap<String, &SafetensorsHeader> = headers
            .iter()
            .filter_map(|h| {
                let name = h.path.file_name()?.to_string_lossy().into_owned();
                Some((name, h))
            })
            .collect();
        let mut wrong: Vec<String> = index
            .weight_map
            .iter()
            .filter(|(tensor, shard)| {
                by_name
                    .get(shard.as_str())
                    .is_none_or(|h| !h.tensors.contains_key(*tensor))
            })
            .map(|(tensor, shard)| format!("{tensor} (in {shard})"))
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        wrong.sort();
        let count = wrong.len();
        wrong.truncate(3);
        Err(self.fail(
            Some(index_path),
            format!(
                "lists {count} tensors its shards do not hold, e.g. {}: the shards come from different versions",
                wrong.join(", ")
            ),
            "get the whole folder again from one source",
        ))
    }

    fn expert(&self, kind: &ModelKind) -> Result<(), CheckFailure> {
        let arch = self.options.arch;
        let want = arch.facts();
        let use_instead = format!("Use the {} experts: {}", want.label, arch.expert_sources());
        let s: &WanTransformerShape = match kind {
            ModelKind::WanTransformer(s) => s,
            ModelKind::Lora { example_key } => {
                return Err(self.fail(
                    self.blame(),
                    format!("is a LoRA or adapter ({example_key}), not the base model's weights"),
                    use_instead,
                ))
            }
            other => {
                return Err(self.fail(
                    self.blame(),
                    format!("is a {other}, not a Wan transformer"),
                    use_instead,
                ))
            }
        };
        if s.image_branch || s.vace {
            return Err(self.fail(
                self.blame(),
                format!(
                    "is a {kind}; Wan 2.2 A14B has no CLIP image branch (img_emb, k_img/v_img)"
                ),
                use_instead,
            ));
        }
        let Some(out) = s.out_channels else {
            return Err(self.fail(
                self.blame(),
                "has no output head (head.head / proj_out): the file set is incomplete",
                use_instead,
            ));
        };
        if s.dim == 3072 && s.in_channels == 48 && !want.one_transformer {
            return Err(self.fail(
                self.blame(),
                format!(
                    "is the Wan 2.2 TI2V-5B model (dim {}, {} latent channels, the first frame given by \
                     latent replacement), not an A14B expert (dim {}, {} input channels)",
                    s.dim, s.in_channels, A14B_EXPERT.dim, want.in_channels
                ),
                use_instead,
            ));
        }
        // The input channels the arch needs at this latent width: the noisy latent, plus for I2V the
        // 4 mask channels and the first frame's latent.
        let needed = if want.first_frame_condition {
            2 * out + 4
        } else {
            out
        };
        if s.in_channels != needed {
            // The other A14B variant is the likely mix-up: say which one the file is and what to change.
            let other = ModelArch::ALL.into_iter().find(|a| {
                let f = a.facts();
                *a != arch
                    && s.in_channels
                        == if f.first_frame_condition {
                            2 * out + 4
                        } else {
                            out
                        }
            });
            let reason = match other {
                Some(o) => format!(
                    "is a {} model: its patch embedding takes {} input channels, but the job trains {} \
                     (model.arch: {}), whose experts take {needed}",
                    if o.facts().first_frame_condition { "image-to-video" } else { "text-to-video" },
                    s.in_channels,
                    want.label,
                    want.name,
                ),
                None => format!(
                    "is a {kind}: it takes {} input channels, a {} expert with {out} latent channels takes {needed}",
                    s.in_channels, want.label
                ),
            };
            let fix = match other {
                Some(o) => format!(
                    "{use_instead}; or, to train the model you gave, set model.arch: {}",
                    o.facts().name
                ),
                None => use_instead,
            };
            return Err(self.fail(self.blame(), reason, fix));
        }
        if self.options.exact_sizes {
            let a = if want.one_transformer {
                TI2V_5B
            } else {
                A14B_EXPERT
            };
            let (model, sizes) = if want.one_transformer {
                ("the TI2V-5B transformer", "5B")
            } else {
                ("an A14B expert", "A14B")
            };
            let mut off = Vec::new();
            let mut compare = |what: &str, got: Option<u64>, want: u64| {
                if let Some(g) = got.filter(|g| *g != want) {
                    off.push(format!("{what} {g} ({sizes}: {want})"));
                }
            };
            compare("dim", Some(s.dim), a.dim);
            compare("blocks", Some(s.layers), a.layers);
            compare("input channels", Some(s.in_channels), want.in_channels);
            compare("output channels", Some(out), a.out_channels);
            compare("ffn width", s.ffn_dim, a.ffn_dim);
            compare("text width", s.text_dim, a.text_dim);
            if !off.is_empty() {
                return Err(self.fail(
                    self.blame(),
                    format!("is a {kind}, not {model}: {}", off.join(", ")),
                    use_instead,
                ));
            }
        }
        Ok(())
    }

    /// A file named for the other expert is probably swapped.
    fn expert_name_hint(&self, files: &[PathBuf]) -> Option<String> {
        let other = match self.rc.component {
            Component::HighNoiseExpert => "low_noise",
            Component::LowNoiseExpert => "high_noise",
            _ => return None,
        };
        files
            .iter()
            .find(|f| f.to_string_lossy().to_ascii_lowercase().contains(other))
            .map(|f| {
                format!(
                    "{} is used as the {} but its name says {other}; are the two experts swapped?",
                    f.display(),
                    self.rc.component
                )
            })
    }

    fn text_encoder(&self, kind: &ModelKind) -> Result<Vec<String>, CheckFailure> {
        let use_instead = "Use umT5-XXL: ComfyUI's umt5_xxl_fp8_e4m3fn_scaled.safetensors or \
                           umt5_xxl_fp16.safetensors, or the text_encoder/ folder of a Wan diffusers repo";
        match kind {
            ModelKind::Umt5Encoder(s) => {
                if self.options.exact_sizes {
                    let mut off = Vec::new();
                    for (what, got, want) in [
                        ("d_model", s.d_model, UMT5_XXL_D_MODEL),
                        ("layers", s.layers, UMT5_XXL_LAYERS),
                        ("vocabulary", s.vocab, UMT5_XXL_VOCAB),
                    ] {
                        if got != want {
                            off.push(format!("{what} {got} (umT5-XXL: {want})"));
                        }
                    }
                    if !off.is_empty() {
                        return Err(self.fail(
                            self.blame(),
                            format!("is an umT5 encoder of another size: {}", off.join(", ")),
                            use_instead,
                        ));
                    }
                }
                Ok(if s.has_decoder {
                    vec!["the text encoder file also holds a decoder; only the encoder is loaded".into()]
                } else {
                    Vec::new()
                })
            }
            ModelKind::T5Encoder(s) => Err(self.fail(
                self.blame(),
                format!(
                    "is a T5 encoder, not umT5: only its first layer has a relative-position bias \
                     (vocabulary {}); T5-XXL files such as t5xxl_fp16.safetensors belong to Flux/SD3",
                    s.vocab
                ),
                use_instead,
            )),
            other => Err(self.fail(self.blame(), format!("is a {other}, not the umT5 text encoder"), use_instead)),
        }
    }

    fn vae(&self, kind: &ModelKind) -> Result<(), CheckFailure> {
        if self.options.arch.facts().one_transformer {
            return self.wan22_vae(kind);
        }
        let use_instead =
            "Use the Wan 2.1 VAE: ComfyUI's wan_2.1_vae.safetensors or the vae/ folder of a \
                           Wan 2.2 I2V A14B diffusers repo";
        match kind {
            ModelKind::WanVae(v) if v.z_dim == 48 => Err(self.fail(
                self.blame(),
                "is the Wan 2.2 VAE (z_dim 48) of TI2V-5B; the A14B experts work in the Wan 2.1 VAE's \
                 16-channel latent space",
                use_instead,
            )),
            ModelKind::WanVae(v) => {
                if self.options.exact_sizes && (v.z_dim, v.base_dim) != (WAN21_VAE_Z_DIM, WAN21_VAE_BASE_DIM) {
                    return Err(self.fail(
                        self.blame(),
                        format!(
                            "is a video VAE of another size (z_dim {}, width {}; the Wan 2.1 VAE has z_dim {}, width {})",
                            v.z_dim, v.base_dim, WAN21_VAE_Z_DIM, WAN21_VAE_BASE_DIM
                        ),
                        use_instead,
                    ));
                }
                if v.in_channels != 3 {
                    return Err(self.fail(
                        self.blame(),
                        format!("takes {} input channels; the Wan 2.1 VAE encodes RGB (3)", v.in_channels),
                        use_instead,
                    ));
                }
                Ok(())
            }
            other => Err(self.fail(self.blame(), format!("is a {other}, not Wan's video VAE"), use_instead)),
        }
    }

    /// TI2V-5B's VAE: the Wan 2.2 VAE (48 latent channels, 2×2 pixel patches in, base width 160).
    fn wan22_vae(&self, kind: &ModelKind) -> Result<(), CheckFailure> {
        let use_instead =
            "Use the Wan 2.2 VAE: ComfyUI's wan2.2_vae.safetensors or the vae/ folder of \
                           Wan-AI/Wan2.2-TI2V-5B-Diffusers";
        match kind {
            ModelKind::WanVae(v) if v.z_dim == 48 => {
                if self.options.exact_sizes && v.base_dim != 160 {
                    return Err(self.fail(
                        self.blame(),
                        format!("is a Wan 2.2-style VAE of another width ({}; the Wan 2.2 VAE has 160)", v.base_dim),
                        use_instead,
                    ));
                }
                Ok(())
            }
            ModelKind::WanVae(v) => Err(self.fail(
                self.blame(),
                format!(
                    "is a Wan VAE with {} latent channels (the Wan 2.1 VAE of the A14B models); TI2V-5B works in \
                     the Wan 2.2 VAE's 48",
                    v.z_dim
                ),
                use_instead,
            )),
            other => Err(self.fail(self.blame(), format!("is a {other}, not Wan's video VAE"), use_instead)),
        }
    }

    fn tokenizer(&self) -> Result<ComponentReport, CheckFailure> {
        let fix = "Use the tokenizer/ folder of a Wan diffusers repository (umT5 tokenizer.json)";
        let Some(path) = self.rc.file_named("tokenizer.json") else {
            return Err(self.fail(None, "has no tokenizer.json on disk", fix));
        };
        let parsed: TokenizerJson = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| {
                self.fail(
                    Some(path.clone()),
                    format!("is not a readable tokenizer.json ({e})"),
                    fix,
                )
            })?;
        let model_type = parsed.model.model_type.unwrap_or_else(|| "unknown".into());
        let vocab = match &parsed.model.vocab {
            Some(serde_json::Value::Array(a)) => a.len() as u64,
            Some(serde_json::Value::Object(o)) => o.len() as u64,
            _ => 0,
        };
        if model_type != "Unigram" {
            return Err(self.fail(
                Some(path),
                format!("is a {model_type} tokenizer; umT5 uses a SentencePiece Unigram tokenizer"),
                fix,
            ));
        }
        if self.options.exact_sizes && vocab < UMT5_TOKENIZER_MIN_PIECES {
            return Err(self.fail(
                Some(path),
                format!("has {vocab} pieces; umT5's tokenizer has about 256k (T5's has 32k)"),
                fix,
            ));
        }
        Ok(ComponentReport {
            component: self.rc.component,
            kind: ModelKind::Tokenizer { model_type, vocab },
            dtypes: None,
            bytes: self.rc.total_bytes(),
            files: self.rc.files.len(),
            warnings: Vec::new(),
        })
    }
}

/// Checks every ready component `stage` needs, one result each (for `wanlora models`).
pub fn check_components(
    model: &ResolvedModel,
    stage: Stage,
    options: &CheckOptions,
) -> Vec<ComponentCheck> {
    let mut results: Vec<ComponentCheck> = model
        .components
        .iter()
        .filter(|c| stage.includes(c.need) && c.is_ready())
        .map(|c| (c.component, check_component(c, options)))
        .collect();
    cross_check(model, &mut results);
    results
}

/// [`check_components`] plus the components still to download, judged from their headers read
/// over HTTP (two small range requests per file), so a wrong model is named before it is fetched.
/// Fails only when the hub cannot be asked (no access, no network); verdicts on the files are
/// in the list.
pub fn check_components_on_hub(
    model: &ResolvedModel,
    hub: &HubConfig,
    stage: Stage,
    options: &CheckOptions,
) -> Result<Vec<ComponentCheck>, Error> {
    let client = HubClient::new(hub);
    let mut results: Vec<ComponentCheck> = Vec::new();
    for c in model.components.iter().filter(|c| stage.includes(c.need)) {
        match c.state {
            State::Ready => results.push((c.component, check_component(c, options))),
            State::Download { .. } if !hub.offline => {
                if let Some(r) = check_component_on_hub(c, &client, options)? {
                    results.push((c.component, r));
                }
            }
            _ => {}
        }
    }
    cross_check(model, &mut results);
    Ok(results)
}

/// Checks what `stage` needs and fails with every problem found, before anything long starts.
pub fn check_model(
    model: &ResolvedModel,
    stage: Stage,
    options: &CheckOptions,
) -> Result<Vec<ComponentReport>, Error> {
    model.require(stage)?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (_, result) in check_components(model, stage, options) {
        match result {
            Ok(r) => reports.push(r),
            Err(f) => failures.push(f),
        }
    }
    if failures.is_empty() {
        Ok(reports)
    } else {
        Err(Error::Checks(failures))
    }
}

/// Agreement between components: both experts alike and distinct, the VAE's latent width equal to
/// the experts' output channels, the text encoder's width equal to the experts' text input.
fn cross_check(model: &ResolvedModel, results: &mut [ComponentCheck]) {
    let shape_of = |results: &[ComponentCheck], c: Component| {
        results.iter().find_map(|(rc, r)| match r {
            Ok(ComponentReport {
                kind: ModelKind::WanTransformer(s),
                ..
            }) if *rc == c => Some(s.clone()),
            _ => None,
        })
    };
    let high = shape_of(results, Component::HighNoiseExpert);
    let low = shape_of(results, Component::LowNoiseExpert);
    let fail = |c: Component, reason: String, fix: &str| {
        let rc = model.component(c);
        CheckFailure {
            component: c,
            source: rc.map(|r| r.source_label()).unwrap_or_default(),
            file: None,
            reason,
            fix: fix.to_string(),
        }
    };
    let mut new_failures: Vec<CheckFailure> = Vec::new();
    if let (Some(h), Some(l)) = (&high, &low) {
        let dims = |s: &WanTransformerShape| {
            (
                s.dim,
                s.layers,
                s.in_channels,
                s.out_channels,
                s.ffn_dim,
                s.text_dim,
            )
        };
        if dims(h) != dims(l) {
            new_failures.push(fail(
                Component::LowNoiseExpert,
                format!(
                    "does not match the high-noise expert (dim {} vs {}, {} vs {} blocks)",
                    l.dim, h.dim, l.layers, h.layers
                ),
                "Take both experts from the same model release",
            ));
        }
        let files = |c| {
            model
                .component(c)
                .map(|r| r.weight_files())
                .unwrap_or_default()
        };
        let (hf, lf) = (
            files(Component::HighNoiseExpert),
            files(Component::LowNoiseExpert),
        );
        if !hf.is_empty() && hf == lf {
            new_failures.push(fail(
                Component::LowNoiseExpert,
                "uses the same weights as the high-noise expert".into(),
                "Point model.high_noise_model_path and model.low_noise_model_path at the two different expert files",
            ));
        }
    }
    let expert = high.or(low);
    if let Some(e) = &expert {
        for (c, r) in results.iter() {
            let Ok(report) = r else { continue };
            match (&report.kind, e.out_channels, e.text_dim) {
                (ModelKind::WanVae(v), Some(out), _) if v.z_dim != out => new_failures.push(fail(
                    *c,
                    format!(
                        "encodes to {} latent channels but the experts expect {out}",
                        v.z_dim
                    ),
                    "Use the VAE that belongs to the experts (Wan 2.1 VAE for A14B)",
                )),
                (ModelKind::Umt5Encoder(t), _, Some(text)) if t.d_model != text => new_failures
                    .push(fail(
                        *c,
                        format!(
                            "produces {}-wide features but the experts take {text}",
                            t.d_model
                        ),
                        "Use the text encoder that belongs to the experts (umT5-XXL for A14B)",
                    )),
                _ => {}
            }
        }
    }
    for f in new_failures {
        if let Some((_, slot)) = results.iter_mut().find(|(c, _)| *c == f.component) {
            if slot.is_ok() {
                *slot = Err(f);
            }
        }
    }
}
