//! The on-disk cache of encoder outputs, beyond AI Toolkit: per item the VAE latent of its
//! sampled frames and the I2V first-frame condition, and per distinct caption its text
//! embedding. Encoders live in the model crate behind the [`LatentEncoder`] and [`TextEncoder`]
//! traits.
//!
//! Entries are content-addressed: the key hashes the source file's bytes and every setting that
//! changes the result (frame numbers, bucket, flip, sampling mode, encoder fingerprint, format
//! version), so a changed clip, caption or setting simply has a new key and nothing stale is
//! ever read. Entries are written atomically, so an interrupted cache pass leaves only complete
//! entries and the next pass encodes what is missing.

mod encoders;
mod hashes;
mod keys;
mod pass;
mod store;
mod tensors;
pub mod testing;

pub use encoders::{EncoderError, LatentEncoder, TextEncoder};
pub use hashes::ContentHashes;
pub use keys::{latent_key, text_key, CACHE_FORMAT_VERSION};
pub use pass::{
    item_latents, run_cache_pass, text_embedding, Cache, CachePassOptions, CacheReport,
};
pub use store::{CacheStore, EntryKind};
pub use tensors::{NamedTensor, NamedTensors, TensorDtype};

use std::path::PathBuf;

/// A cache that cannot be read or written, or an encoder that failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cache entry is damaged ({message}); delete it and run again", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("the {what} encoder failed: {source}")]
    Encoder {
        what: &'static str,
        source: EncoderError,
    },
    #[error("the {what} encoder returned {message}")]
    EncoderOutput { what: &'static str, message: String },
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    #[error(transparent)]
    Data(#[from] crate::catalog::DataError),
}

impl CacheError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
