//! The form's YAML round trip and presets: YAML text ⇄ job tree, each with the findings.

use super::AppState;
use crate::error::ApiResult;
use crate::jobspec;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct YamlBody {
    pub yaml: String,
}

/// YAML (or JSON, e.g. an imported AI Toolkit job) → the tree the form edits, plus findings.
/// A syntax error is a finding too (with its line), so the YAML view can show it in place.
pub async fn parse(
    State(state): State<AppState>,
    Json(body): Json<YamlBody>,
) -> ApiResult<Json<Value>> {
    match jobspec::parse_yaml(&body.yaml) {
        Ok(tree) => {
            let findings = jobspec::validate(&tree, &body.yaml, &state.dirs);
            Ok(Json(json!({ "tree": tree, "findings": findings })))
        }
        Err(finding) => Ok(Json(json!({ "tree": null, "findings": [finding] }))),
    }
}

#[derive(Deserialize)]
pub struct TreeBody {
    pub tree: Value,
}

/// The form's tree → YAML for the YAML view, plus findings for the form.
pub async fn render(
    State(state): State<AppState>,
    Json(body): Json<TreeBody>,
) -> ApiResult<Json<Value>> {
    let yaml = match jobspec::to_yaml(&body.tree) {
        Ok(y) => y,
        Err(finding) => return Ok(Json(json!({ "yaml": null, "findings": [finding] }))),
    };
    let findings = jobspec::validate(&body.tree, &yaml, &state.dirs);
    Ok(Json(json!({ "yaml": yaml, "findings": findings })))
}
