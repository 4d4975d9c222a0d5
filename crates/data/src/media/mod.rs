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
pub use probe::{pix_fmt_has_alpha, probe, FrameCountSource, MediaInfo, Rational, Truncation};

/// The most pixels a source image or video frame may have: 8192×8192 (67 MP). The largest
/// bucket of a 1024 run is about 1 MP, so this leaves a 64× margin for downscaling, while a
/// 30000×30000 PNG (900 MP, 3.6 GB as RGBA) is refused from its header before anything is decoded.
pub const MAX_SOURCE_PIXELS: u64 = 8192 * 8192;

/// Refuses a source whose header size exceeds [`MAX_SOURCE_PIXELS`].
pub(crate) fn check_pixel_limit(
    path: &std::path::Path,
    width: u32,
    height: u32,
) -> Result<(), MediaError> {
    if u64::from(width) * u64::from(height) > MAX_SOURCE_PIXELS {
        return Err(MediaError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(())
}
