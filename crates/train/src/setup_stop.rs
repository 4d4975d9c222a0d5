//! Stopping during set-up: Ctrl+C or `control/stop` while captions are encoded or the latent cache
//! pass runs ends the run cleanly (status `stopped`, the pid file removed) instead of killing it
//! with status.json left at `caching`. Cache entries written until then stay valid.

use wanlora_data::cache::{CacheError, EncoderError, LatentEncoder, NamedTensors};
use wanlora_data::media::Frames;

use crate::output::JobFolder;
use crate::TrainError;

/// The error a [`StopChecked`] encoder ends the cache pass with.
#[derive(Debug, thiserror::Error)]
#[error("stop requested")]
pub struct StopRequested;

/// A latent encoder that checks for a stop request before each clip.
pub struct StopChecked<'a, E> {
    pub inner: E,
    pub folder: &'a JobFolder,
}

impl<E: LatentEncoder> LatentEncoder for StopChecked<'_, E> {
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    fn encode(&mut self, frames: &Frames) -> Result<NamedTensors, EncoderError> {
        if self.folder.stop_requested() {
            return Err(Box::new(StopRequested));
        }
        self.inner.encode(frames)
    }
}

/// The cache pass's error, or [`TrainError::StoppedDuringSetup`] when it ended on a stop request.
pub fn cache_pass_error(e: CacheError) -> TrainError {
    match &e {
        CacheError::Encoder { source, .. } if source.is::<StopRequested>() => {
            TrainError::StoppedDuringSetup {
                phase: "caching latents",
            }
        }
        _ => e.into(),
    }
}
