//! Captions: which file a caption comes from, trigger-word handling, and caption dropout.

use crate::rng::SplitMix64;
use std::path::{Path, PathBuf};

/// Where an item's caption text came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum CaptionSource {
    /// The file with the media's name and the caption extension.
    OwnFile(PathBuf),
    /// A `default<ext>` / `default.txt` in the media's folder or a folder above it in the dataset.
    FolderDefault(PathBuf),
    /// The dataset's `default_caption`.
    DefaultCaption,
    /// Nothing: the caption is empty (then only the trigger word, if any, remains).
    Missing,
}

/// A caption as read, before the trigger word is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCaption {
    pub text: String,
    pub source: CaptionSource,
    /// Caption files that were not valid UTF-8 (decoded lossily).
    pub non_utf8: Vec<PathBuf>,
    /// Caption files that exist but could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Caption files that exist but are empty or hold only whitespace (treated as absent).
    pub empty: Vec<PathBuf>,
}

/// Text of a caption file: invalid UTF-8 is decoded lossily (and flagged), a byte-order mark
/// dropped, whitespace normalised.
fn read_caption_file(path: &Path) -> std::io::Result<(String, bool)> {
    let bytes = std::fs::read(path)?;
    let (text, lossy) = match String::from_utf8(bytes) {
        Ok(text) => (text, false),
        Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), true),
    };
    Ok((clean_caption(text.trim_start_matches('\u{feff}')), lossy))
}

/// Line breaks and runs of whitespace become single spaces; ends trimmed.
pub fn clean_caption(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Resolves the caption of `media`: its own caption file, else `default<ext>` or `default.txt`
/// in its folder (then the folders above it up to `dataset_root`), else `default_caption`.
/// An empty caption file counts as absent. `caption_ext` carries its dot.
pub fn read_caption(
    media: &Path,
    dataset_root: &Path,
    caption_ext: &str,
    default_caption: Option<&str>,
) -> RawCaption {
    let mut non_utf8 = Vec::new();
    let mut unreadable = Vec::new();
    let mut empty = Vec::new();
    let mut try_file = |path: &Path| -> Option<String> {
        if !path.is_file() {
            return None;
        }
        match read_caption_file(path) {
            Ok((text, lossy)) => {
                if lossy {
                    non_utf8.push(path.to_path_buf());
                }
                if text.is_empty() {
                    empty.push(path.to_path_buf());
                }
                (!text.is_empty()).then_some(text)
            }
            Err(err) => {
                unreadable.push((path.to_path_buf(), err.to_string()));
                None
            }
        }
    };

    let own = caption_path(media, caption_ext);
    let mut found = try_file(&own).map(|text| (text, CaptionSource::OwnFile(own)));
    if found.is_none() {
        let mut folder = media.parent();
        'folders: while let Some(dir) = folder {
            for name in [format!("default{caption_ext}"), "default.txt".to_string()] {
                let candidate = dir.join(name);
                if candidate == caption_path(media, caption_ext) {
                    continue;
                }
                if let Some(text) = try_file(&candidate) {
                    found = Some((text, CaptionSource::FolderDefault(candidate)));
                    break 'folders;
                }
            }
            if dir == dataset_root || !dir.starts_with(dataset_root) {
                break;
            }
            folder = dir.parent();
        }
    }
    let (text, source) = match found {
        Some(found) => found,
        None => match default_caption.map(clean_caption).filter(|t| !t.is_empty()) {
            Some(text) => (text, CaptionSource::DefaultCaption),
            None => (String::new(), CaptionSource::Missing),
        },
    };
    RawCaption {
        text,
        source,
        non_utf8,
        unreadable,
        empty,
    }
}

/// `clip.mp4` with `.txt` → `clip.txt`, beside the media file.
pub fn caption_path(media: &Path, caption_ext: &str) -> PathBuf {
    let stem = media.file_stem().unwrap_or_default().to_string_lossy();
    media.with_file_name(format!("{stem}{caption_ext}"))
}

/// AI Toolkit's trigger handling: `[trigger]` and `[name]` become the trigger word (or nothing
/// when there is none); then, if `prepend` and the trigger does not occur in the caption, the
/// caption becomes `"<trigger> <caption>"`.
pub fn apply_trigger(caption: &str, trigger: Option<&str>, prepend: bool) -> String {
    let trigger = trigger.map(str::trim).unwrap_or("");
    let replaced = caption
        .replace("[trigger]", trigger)
        .replace("[name]", trigger);
    let replaced = clean_caption(&replaced);
    if !trigger.is_empty() && prepend && !replaced.contains(trigger) {
        if replaced.is_empty() {
            trigger.to_string()
        } else {
            format!("{trigger} {replaced}")
        }
    } else {
        replaced
    }
}

/// The caption used by differential output preservation: the trigger word replaced by the class
/// word ("p3r5on walks" → "person walks"). `None` without a trigger word.
pub fn preservation_caption(caption: &str, trigger: Option<&str>, class: &str) -> Option<String> {
    let trigger = trigger.map(str::trim).filter(|t| !t.is_empty())?;
    Some(clean_caption(&caption.replace(trigger, class.trim())))
}

/// The caption a dropped-out item trains with: the empty caption (the unconditional prompt), as
/// AI Toolkit's live caption dropout does.
pub const DROPOUT_CAPTION: &str = "";

/// Whether caption dropout hits this occurrence of an item. A pure function of the seed, the
/// item, the epoch and the repeat, so a resumed run drops exactly the same captions.
pub fn caption_dropped(seed: u64, item: usize, epoch: u64, repeat: u32, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let mut rng = SplitMix64::for_parts(&[seed, 0xCA97_1011, item as u64, epoch, repeat as u64]);
    rng.next_f64() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_tokens_are_replaced_and_trigger_prepended_once() {
        assert_eq!(
            apply_trigger("a photo of [trigger] at [name]", Some("p3r5on"), true),
            "a photo of p3r5on at p3r5on"
        );
        assert_eq!(
            apply_trigger("a woman walks", Some("p3r5on"), true),
            "p3r5on a woman walks"
        );
        assert_eq!(
            apply_trigger("p3r5on, a woman walks", Some("p3r5on"), true),
            "p3r5on, a woman walks"
        );
        assert_eq!(
            apply_trigger("a woman walks", Some("p3r5on"), false),
            "a woman walks"
        );
        assert_eq!(apply_trigger("", Some("p3r5on"), true), "p3r5on");
        assert_eq!(apply_trigger("a [trigger] walks", None, true), "a walks");
    }

    #[test]
    fn preservation_replaces_the_trigger_by_the_class() {
        assert_eq!(
            preservation_caption("p3r5on a woman, p3r5on smiles", Some("p3r5on"), "person"),
            Some("person a woman, person smiles".to_string())
        );
        assert_eq!(preservation_caption("x", None, "person"), None);
    }

    #[test]
    fn cleaning_collapses_whitespace() {
        assert_eq!(clean_caption("  a\n b\t\tc \r\n"), "a b c");
    }

    #[test]
    fn dropout_rate_is_met_and_is_reproducible() {
        let n = 20_000;
        let dropped = (0..n)
            .filter(|&i| caption_dropped(42, i, 3, 0, 0.1))
            .count();
        let rate = dropped as f64 / n as f64;
        assert!((rate - 0.1).abs() < 0.01, "rate {rate}");
        let again = (0..n)
            .filter(|&i| caption_dropped(42, i, 3, 0, 0.1))
            .count();
        assert_eq!(dropped, again);
        let other_epoch = (0..n)
            .filter(|&i| caption_dropped(42, i, 3, 0, 0.1) != caption_dropped(42, i, 4, 0, 0.1))
            .count();
        assert!(other_epoch > 1000, "epochs must draw independently");
        assert!(!(0..1000).any(|i| caption_dropped(1, i, 0, 0, 0.0)));
        assert!((0..1000).all(|i| caption_dropped(1, i, 0, 0, 1.0)));
    }
}
