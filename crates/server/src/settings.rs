//! Settings kept in the database and edited on the Settings page.

use crate::db;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// Hugging Face token handed to the trainer as HF_TOKEN (for gated or private model repos).
pub const HF_TOKEN: &str = "hf_token";
/// The GPU a new job's form starts with.
pub const DEFAULT_GPU: &str = "default_gpu";

/// What the page sees: secrets only as "set or not".
#[derive(Debug, Serialize, PartialEq)]
pub struct SettingsView {
    pub hf_token_set: bool,
    pub default_gpu: String,
}

/// A change from the page; absent fields stay as they are, an empty token clears it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    pub hf_token: Option<String>,
    pub default_gpu: Option<String>,
}

pub fn view(conn: &Connection) -> Result<SettingsView, db::DbError> {
    Ok(SettingsView {
        hf_token_set: db::get_setting(conn, HF_TOKEN)?.is_some_and(|t| !t.is_empty()),
        default_gpu: db::get_setting(conn, DEFAULT_GPU)?.unwrap_or_else(|| "0".into()),
    })
}

pub fn apply(conn: &Connection, update: &SettingsUpdate) -> Result<(), db::DbError> {
    if let Some(t) = &update.hf_token {
        db::set_setting(conn, HF_TOKEN, t.trim())?;
    }
    if let Some(g) = &update.default_gpu {
        db::set_setting(conn, DEFAULT_GPU, g)?;
    }
    Ok(())
}
