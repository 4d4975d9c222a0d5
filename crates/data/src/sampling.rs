//! Which frames of a clip become a training item.
//!
//! * Spread (`shrink_video_to_frames: true`, AI Toolkit's default): `F` frames evenly over the
//!   whole clip of `N` frames, frame `i` = round(i·(N−1)/(F−1)), rounding half to even as
//!   Python's `round` does.
//! * Real time (`shrink_video_to_frames: false`): `F` frames at the dataset's fps from a start
//!   frame drawn from the job seed; frame `i` = start + round(i·source_fps/fps). When the clip is
//!   too short for that, the frames are spread over the whole clip instead (AI Toolkit's
//!   fallback).
//! * Auto frame count: `F` = ⌊duration·fps⌋ snapped down to 4n+1, taken in real time from the
//!   first frame.
//!
//! AI Toolkit steps by a whole number of source frames, round(source_fps/fps), so a 30 fps clip
//! trained at 16 fps plays at 15 fps; we step by the exact ratio instead, so motion keeps its
//! real speed.

use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// How frames are chosen, from the dataset's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum SamplingMode {
    /// `num_frames` spread over the whole clip.
    Spread { num_frames: usize },
    /// `num_frames` consecutive frames at `fps`, from a seeded random start.
    RealTime { num_frames: usize, fps: f64 },
    /// As many frames as the clip's duration holds at `fps`, snapped to 4n+1. `trim_tail`
    /// (AI Toolkit's default): snapped down, taken in real time from the start, the tail that does
    /// not fit dropped; otherwise (AI Toolkit's older behaviour) snapped to the nearest lower
    /// multiple of 4 plus one, which may be one frame more than the clip holds at `fps`, spread
    /// over the whole clip.
    AutoCount { fps: f64, trim_tail: bool },
}

/// What sampling could not do as asked; reported to the user, the item is still used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SamplingNote {
    /// The clip has fewer frames than asked: some frames appear more than once.
    Repeated { available: usize, wanted: usize },
    /// The clip is too short to take the frames in real time: they were spread over the whole
    /// clip (motion plays faster than in the source).
    Stretched { available: usize, needed: usize },
    /// The clip's frame rate is below the dataset's: real-time sampling repeats frames.
    SlowSource { source_fps: f64, fps: f64 },
}

impl std::fmt::Display for SamplingNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Repeated { available, wanted } => write!(
                f,
                "clip has {available} frames but {wanted} are needed: frames are repeated"
            ),
            Self::Stretched { available, needed } => write!(
                f,
                "clip has {available} frames, {needed} are needed to sample in real time: frames were spread over the whole clip instead (faster motion)"
            ),
            Self::SlowSource { source_fps, fps } => write!(
                f,
                "clip runs at {source_fps:.3} fps, below the dataset's {fps} fps: frames are repeated"
            ),
        }
    }
}

/// The frames chosen for one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FramePlan {
    pub indices: Vec<usize>,
    pub notes: Vec<SamplingNote>,
}

/// `wanted` frame numbers spread evenly over `0..total`: round(i·(total−1)/(wanted−1)) with
/// ties to even, computed exactly in integers.
pub fn spread_indices(total: usize, wanted: usize) -> Vec<usize> {
    if wanted <= 1 || total <= 1 {
        return vec![0; wanted];
    }
    let span = (total - 1) as u128;
    let steps = (wanted - 1) as u128;
    (0..wanted as u128)
        .map(|i| {
            let numerator = i * span;
            let (quotient, remainder) = (numerator / steps, numerator % steps);
            let rounded = match (2 * remainder).cmp(&steps) {
                std::cmp::Ordering::Less => quotient,
                std::cmp::Ordering::Greater => quotient + 1,
                std::cmp::Ordering::Equal => quotient + (quotient % 2),
            };
            rounded as usize
        })
        .collect()
}

/// Offsets from the start frame for `count` frames at `fps` out of a `source_fps` clip.
fn real_time_offsets(count: usize, source_fps: f64, fps: f64) -> Vec<usize> {
    let ratio = source_fps / fps;
    (0..count)
        .map(|i| (i as f64 * ratio).round_ties_even() as usize)
        .collect()
}

/// Frames in `duration_s` at `fps`, made 4n+1 as AI Toolkit's `get_auto_frame_count` does:
/// with `trim_tail` the largest 4n+1 that fits, otherwise ⌊frames/4⌋·4 + 1 (at least 1).
pub fn auto_frame_count(duration_s: f64, fps: f64, trim_tail: bool) -> usize {
    let frames = (duration_s * fps + 1e-6).floor().max(0.0) as usize;
    if trim_tail {
        frames.saturating_sub(1) / 4 * 4 + 1
    } else {
        frames / 4 * 4 + 1
    }
}

/// The clip's duration in seconds, from its frame count when the container gives none.
fn clip_duration(clip: ClipTiming) -> f64 {
    if clip.duration_s > 0.0 {
        clip.duration_s
    } else {
        clip.frame_count.max(1) as f64 / clip.fps
    }
}

/// A clip's timing, as probed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipTiming {
    pub frame_count: usize,
    pub fps: f64,
    pub duration_s: f64,
}

/// Chooses the frames of one clip. `start_seed` draws the start frame in real-time mode; the
/// caller derives it from the job seed and the item, so the same item always gets the same
/// frames (its cached latent stays valid, and resume is exact).
pub fn plan_frames(clip: ClipTiming, mode: SamplingMode, start_seed: u64) -> FramePlan {
    let total = clip.frame_count.max(1);
    let mut notes = Vec::new();
    let spread = |wanted: usize, notes: &mut Vec<SamplingNote>| {
        if total < wanted {
            notes.push(SamplingNote::Repeated {
                available: total,
                wanted,
            });
        }
        spread_indices(total, wanted)
    };
    let indices = match mode {
        SamplingMode::Spread { num_frames } => spread(num_frames, &mut notes),
        SamplingMode::RealTime { num_frames, fps } => {
            let offsets = real_time_offsets(num_frames, clip.fps, fps);
            let needed = offsets.last().map_or(1, |last| last + 1);
            if total < num_frames || needed > total {
                if total >= num_frames {
                    notes.push(SamplingNote::Stretched {
                        available: total,
                        needed,
                    });
                }
                spread(num_frames, &mut notes)
            } else {
                if clip.fps < fps {
                    notes.push(SamplingNote::SlowSource {
                        source_fps: clip.fps,
                        fps,
                    });
                }
                let slack = (total - needed) as u64;
                let start = SplitMix64::new(start_seed).below(slack + 1) as usize;
                offsets.iter().map(|o| start + o).collect()
            }
        }
        SamplingMode::AutoCount {
            fps,
            trim_tail: false,
        } => {
            let count = auto_frame_count(clip_duration(clip), fps, false);
            spread(count, &mut notes)
        }
        SamplingMode::AutoCount {
            fps,
            trim_tail: true,
        } => {
            let count = auto_frame_count(clip_duration(clip), fps, true);
            let offsets = real_time_offsets(count, clip.fps, fps);
            if offsets.last().is_some_and(|&last| last >= total) {
                // The duration overstates the frames (a rounded duration): keep the count and
                // spread over what is there.
                spread(count, &mut notes)
            } else {
                if clip.fps < fps {
                    notes.push(SamplingNote::SlowSource {
                        source_fps: clip.fps,
                        fps,
                    });
                }
                offsets
            }
        }
    };
    FramePlan { indices, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(frame_count: usize, fps: f64) -> ClipTiming {
        ClipTiming {
            frame_count,
            fps,
            duration_s: frame_count as f64 / fps,
        }
    }

    #[test]
    fn spread_follows_the_formula_with_ties_to_even() {
        assert_eq!(spread_indices(30, 5), [0, 7, 14, 22, 29]);
        // i·9/4 = 0, 2.25, 4.5, 6.75, 9 → 0, 2, 4 (tie to even), 7, 9
        assert_eq!(spread_indices(10, 5), [0, 2, 4, 7, 9]);
        assert_eq!(spread_indices(81, 81), (0..81).collect::<Vec<_>>());
        assert_eq!(spread_indices(100, 1), [0]);
        // Shorter than asked: indices repeat.
        assert_eq!(spread_indices(3, 5), [0, 0, 1, 2, 2]);
    }

    #[test]
    fn spread_reports_repeats() {
        let plan = plan_frames(clip(3, 10.0), SamplingMode::Spread { num_frames: 5 }, 0);
        assert_eq!(plan.indices, [0, 0, 1, 2, 2]);
        assert_eq!(
            plan.notes,
            [SamplingNote::Repeated {
                available: 3,
                wanted: 5
            }]
        );
    }

    #[test]
    fn real_time_steps_by_the_exact_fps_ratio() {
        // 32 fps source at 16 fps: every second frame.
        let plan = plan_frames(
            clip(200, 32.0),
            SamplingMode::RealTime {
                num_frames: 5,
                fps: 16.0,
            },
            9,
        );
        let start = plan.indices[0];
        assert_eq!(
            plan.indices,
            [start, start + 2, start + 4, start + 6, start + 8]
        );
        assert!(start + 8 < 200);
        assert!(plan.notes.is_empty());
        // 30 fps at 16 fps: offsets round(i·1.875).
        assert_eq!(real_time_offsets(5, 30.0, 16.0), [0, 2, 4, 6, 8]);
        assert_eq!(real_time_offsets(9, 30.0, 16.0)[8], 15);
    }

    #[test]
    fn real_time_start_is_seeded_and_covers_the_slack() {
        let mode = SamplingMode::RealTime {
            num_frames: 5,
            fps: 10.0,
        };
        let a = plan_frames(clip(50, 10.0), mode, 1);
        assert_eq!(a, plan_frames(clip(50, 10.0), mode, 1));
        let starts: std::collections::BTreeSet<usize> = (0..400)
            .map(|s| plan_frames(clip(50, 10.0), mode, s).indices[0])
            .collect();
        // 50 frames, 5 needed: starts 0..=45, all reachable.
        assert_eq!(starts.len(), 46);
        assert_eq!(*starts.last().unwrap(), 45);
    }

    #[test]
    fn real_time_falls_back_to_spreading_when_too_short() {
        let plan = plan_frames(
            clip(20, 30.0),
            SamplingMode::RealTime {
                num_frames: 17,
                fps: 16.0,
            },
            0,
        );
        assert_eq!(plan.indices, spread_indices(20, 17));
        assert_eq!(
            plan.notes,
            [SamplingNote::Stretched {
                available: 20,
                needed: 31
            }]
        );
    }

    #[test]
    fn auto_count_snaps_to_4n_plus_1_and_keeps_real_time() {
        assert_eq!(auto_frame_count(5.0, 16.0, true), 77);
        assert_eq!(auto_frame_count(2.5, 16.0, true), 37);
        assert_eq!(auto_frame_count(0.01, 16.0, true), 1);
        assert_eq!(auto_frame_count(1.0, 16.0, true), 13);
        // Without trimming: AI Toolkit's ⌊frames/4⌋·4 + 1, one frame more when frames is 4n.
        assert_eq!(auto_frame_count(5.0, 16.0, false), 81);
        assert_eq!(auto_frame_count(2.5, 16.0, false), 41);
        assert_eq!(auto_frame_count(0.01, 16.0, false), 1);
        let auto = |trim_tail| SamplingMode::AutoCount {
            fps: 16.0,
            trim_tail,
        };
        let plan = plan_frames(clip(75, 30.0), auto(true), 0);
        // 2.5 s at 16 fps = 40 → 37 frames, from frame 0 at 30/16 steps.
        assert_eq!(plan.indices.len(), 37);
        assert_eq!(plan.indices[0], 0);
        assert_eq!(plan.indices[36], 68);
        assert!(plan.notes.is_empty());
        // trim_auto_frame_count_tail: false → 41 frames spread over the whole clip, last frame kept.
        let plan = plan_frames(clip(75, 30.0), auto(false), 0);
        assert_eq!(plan.indices.len(), 41);
        assert_eq!((plan.indices[0], plan.indices[40]), (0, 74));
    }
}
