//! Cache keys: SHA-256 over a canonical text of everything that determines an entry's content.

use crate::catalog::DataItem;
use sha2::{Digest, Sha256};

/// Bumped whenever decoding, resizing or the entry layout changes, so older entries stop matching.
pub const CACHE_FORMAT_VERSION: u32 = 1;

/// The canonical description of a latent entry: source bytes, frames, bucket, flip, sampling,
/// encoder and format version. Captions are not part of it (they have their own entries).
pub fn latent_key_text(content_sha256: &str, item: &DataItem, encoder_fingerprint: &str) -> String {
    let frames: Vec<String> = item.frame_indices.iter().map(usize::to_string).collect();
    format!(
        "wanlora latent cache v{CACHE_FORMAT_VERSION}\ncontent {content_sha256}\nkind {:?}\nframes {}\nbucket {}x{}\nflip {}\nsampling {:?}\nencoder {encoder_fingerprint}\n",
        item.kind,
        frames.join(","),
        item.bucket.width,
        item.bucket.height,
        item.flip,
        item.sampling,
    )
}

/// The key of an item's latent entry.
pub fn latent_key(content_sha256: &str, item: &DataItem, encoder_fingerprint: &str) -> String {
    digest(&latent_key_text(content_sha256, item, encoder_fingerprint))
}

/// The key of a caption's text-embedding entry.
pub fn text_key(text: &str, encoder_fingerprint: &str) -> String {
    digest(&format!(
        "wanlora text cache v{CACHE_FORMAT_VERSION}\nencoder {encoder_fingerprint}\ntext {text}"
    ))
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
