//! The form's YAML round trip (YAML text ⇄ job tree, each with the findings), the presets and the
//! schema of known keys (for select choices), all from wanlora-config.

use super::AppState;
use crate::error::ApiResult;
use crate::jobspec::{self, Finding, Tree};
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct YamlBody {
    pub yaml: String,
}

/// The answer to parse: the tree (keys in document order) and the findings.
#[derive(Serialize)]
pub struct Parsed {
    tree: Option<Tree>,
    findings: Vec<Finding>,
}

/// YAML (or JSON, e.g. an imported AI Toolkit job) → the tree the form edits, plus findings.
/// A syntax error is a finding too (with its line), so the YAML view can show it in place.
pub async fn parse(
    State(state): State<AppState>,
    Json(body): Json<YamlBody>,
) -> ApiResult<Json<Parsed>> {
    Ok(Json(match jobspec::parse_yaml(&body.yaml) {
        Ok(tree) => {
            let findings = jobspec::validate(&tree, &body.yaml, &state.dirs);
            Parsed {
                tree: Some(tree),
                findings,
            }
        }
        Err(finding) => Parsed {
            tree: None,
            findings: vec![finding],
        },
    }))
}

#[derive(Deserialize)]
pub struct TreeBody {
    pub tree: Tree,
}

#[derive(Serialize)]
pub struct Rendered {
    yaml: Option<String>,
    findings: Vec<Finding>,
}

/// The form's tree → YAML for the YAML view, plus findings for the form.
pub async fn render(
    State(state): State<AppState>,
    Json(body): Json<TreeBody>,
) -> ApiResult<Json<Rendered>> {
    Ok(Json(match jobspec::to_yaml(&body.tree) {
        Ok(yaml) => {
            let findings = jobspec::validate(&body.tree, &yaml, &state.dirs);
            Rendered {
                yaml: Some(yaml),
                findings,
            }
        }
        Err(finding) => Rendered {
            yaml: None,
            findings: vec![finding],
        },
    }))
}

/// The six example jobs (motion, style, character; 24 GB and H100) as YAML.
pub async fn presets() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "presets": wanlora_config::presets::all() }))
}

/// Every key the job format knows, with its kind, default, choices and help.
pub async fn schema() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "keys": wanlora_config::known_keys() }))
}
