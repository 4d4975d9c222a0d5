//! Media I/O through the ffmpeg command-line tools and the `image` crate: probing, decoding the
//! selected frames of a clip into RGB, loading still images, and writing sample videos.

mod decode;
mod encode;
mod error;
mod frames;
mod image_file;
mod probe;
mod process;

pub use decode::{count_decoded_frames, decode_video_frames};
pub use encode::{thumbnail, write_jpeg, write_mp4, write_webp};
pub use error::MediaError;
pub use frames::{FrameRef, Frames};
pub use image_file::{load_image, probe_image, ImageInfo, ImageNotes};
pub use probe::{pix_fmt_has_alpha, probe, FrameCountSource, MediaInfo, Rational};
