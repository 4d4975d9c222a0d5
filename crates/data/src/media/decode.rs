//! Decoding the selected frames of a clip: one ffmpeg process per clip, raw RGB24 over a pipe,
//! resized to cover the bucket (bicubic) and centre-cropped to it by ffmpeg's filters.

use super::process::{args, path_arg, run_tool, short_stderr};
use super::{Frames, MediaError, MediaInfo};
use crate::bucket::{cover_resize, BucketSize};
use std::path::Path;

/// Decodes the frames at `indices` (0-based, in presentation order; may repeat and be unsorted)
/// of the clip at `path`, scaled to cover `bucket` and centre-cropped to it. The frames come back
/// in the order of `indices`. `info` is the clip's probe, for its displayed size.
pub fn decode_video_frames(
    path: &Path,
    info: &MediaInfo,
    indices: &[usize],
    bucket: BucketSize,
) -> Result<Frames, MediaError> {
    let mut unique: Vec<usize> = indices.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.is_empty() {
        return Err(MediaError::Invalid {
            path: path.to_path_buf(),
            message: "no frames were asked for".into(),
        });
    }
    let resize = cover_resize(info.display_width, info.display_height, bucket);
    let mut filters = vec![select_filter(&unique)];
    if (resize.scaled_width, resize.scaled_height) != (info.display_width, info.display_height) {
        filters.push(format!(
            "scale={}:{}:flags=bicubic",
            resize.scaled_width, resize.scaled_height
        ));
    }
    if (resize.scaled_width, resize.scaled_height) != (bucket.width, bucket.height) {
        filters.push(format!(
            "crop={}:{}:{}:{}",
            bucket.width, bucket.height, resize.crop_x, resize.crop_y
        ));
    }

    let mut argv = args(["-nostdin", "-v", "error", "-i"]);
    argv.push(path_arg(path));
    argv.extend(args([
        "-map",
        "0:V:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        &filters.join(","),
        // Every selected frame exactly once: no duplication or dropping to a constant rate.
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]));
    let frame_len = bucket.width as usize * bucket.height as usize * 3;
    let out = run_tool("ffmpeg", &argv, None, frame_len * unique.len())?;
    let decoded = out.stdout.len() / frame_len;
    if !out.success && decoded == 0 {
        return Err(MediaError::Ffmpeg {
            path: path.to_path_buf(),
            message: short_stderr(&out.stderr),
        });
    }
    if decoded != unique.len() || out.stdout.len() % frame_len != 0 {
        return Err(MediaError::ShortDecode {
            path: path.to_path_buf(),
            expected: unique.len(),
            decoded,
            stderr: out.stderr,
        });
    }
    let decoded = Frames::new(
        unique.len(),
        bucket.height as usize,
        bucket.width as usize,
        out.stdout,
    )?;
    if unique.len() == indices.len() && unique.as_slice() == indices {
        return Ok(decoded);
    }
    let positions: Vec<usize> = indices
        .iter()
        .map(|i| unique.binary_search(i).unwrap_or_default())
        .collect();
    Ok(decoded.select(&positions))
}

/// ffmpeg's `select` expression for a sorted set of frame numbers, as runs: `between(n,a,b)` for
/// consecutive frames, `eq(n,a)` for single ones. Commas are escaped for the filter graph.
fn select_filter(sorted_unique: &[usize]) -> String {
    let mut terms = Vec::new();
    let mut run_start = sorted_unique[0];
    let mut previous = run_start;
    for &index in &sorted_unique[1..] {
        if index == previous + 1 {
            previous = index;
            continue;
        }
        terms.push(run_term(run_start, previous));
        run_start = index;
        previous = index;
    }
    terms.push(run_term(run_start, previous));
    format!("select={}", terms.join("+"))
}

fn run_term(first: usize, last: usize) -> String {
    if first == last {
        format!("eq(n\\,{first})")
    } else {
        format!("between(n\\,{first}\\,{last})")
    }
}

/// Frames in the clip counted by decoding all of it: slow, used only when the header's count
/// proved wrong.
pub fn count_decoded_frames(path: &Path) -> Result<usize, MediaError> {
    let mut argv = args([
        "-v",
        "error",
        "-select_streams",
        "V:0",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
    ]);
    argv.push(path_arg(path));
    let out = run_tool("ffprobe", &argv, None, 64)?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().trim_end_matches(',').parse::<usize>() {
        Ok(n) => Ok(n),
        Err(_) => Err(MediaError::Unreadable {
            path: path.to_path_buf(),
            message: short_stderr(&out.stderr),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_expression_groups_runs() {
        assert_eq!(select_filter(&[3]), "select=eq(n\\,3)");
        assert_eq!(
            select_filter(&[0, 1, 2, 5, 7, 8]),
            "select=between(n\\,0\\,2)+eq(n\\,5)+between(n\\,7\\,8)"
        );
    }
}
