//! Writing a job back as YAML (the resolved config a run records, and the UI's YAML view).

use crate::job::Job;

/// The job as YAML that [`crate::parse_job`] reads back to the same [`Job`].
pub fn to_yaml(job: &Job) -> String {
    match serde_saphyr::to_string(job) {
        Ok(text) => text,
        // Plain structs, strings and finite numbers always serialise; should that ever fail, JSON is
        // valid YAML too and reads back the same.
        Err(_) => serde_json::to_string_pretty(job).unwrap_or_default(),
    }
}
