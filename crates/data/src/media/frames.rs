//! Decoded frames in memory.

use super::MediaError;

/// `frames` RGB images of one size, 8 bits per channel, stored frame after frame, row after row:
/// `data[((f · height + y) · width + x) · 3 + c]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// One frame of a [`Frames`], borrowed.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub width: usize,
    pub height: usize,
    /// `height · width · 3` bytes, RGB.
    pub data: &'a [u8],
}

impl Frames {
    /// Checks that `data` holds exactly `frames · height · width · 3` bytes.
    pub fn new(
        frames: usize,
        height: usize,
        width: usize,
        data: Vec<u8>,
    ) -> Result<Self, MediaError> {
        let expected = frames * height * width * 3;
        if data.len() != expected {
            return Err(MediaError::Invalid {
                path: Default::default(),
                message: format!(
                    "frame buffer has {} bytes, {frames}×{height}×{width}×3 needs {expected}",
                    data.len()
                ),
            });
        }
        Ok(Self {
            frames,
            height,
            width,
            data,
        })
    }

    /// Bytes of one frame.
    pub fn frame_len(&self) -> usize {
        self.height * self.width * 3
    }

    /// Frame `index` (panics when out of range, like slice indexing).
    pub fn frame(&self, index: usize) -> FrameRef<'_> {
        let len = self.frame_len();
        FrameRef {
            width: self.width,
            height: self.height,
            data: &self.data[index * len..(index + 1) * len],
        }
    }

    /// The RGB value at (frame, y, x).
    pub fn pixel(&self, frame: usize, y: usize, x: usize) -> [u8; 3] {
        let at = ((frame * self.height + y) * self.width + x) * 3;
        [self.data[at], self.data[at + 1], self.data[at + 2]]
    }

    /// A new clip made of the frames at `positions` (a frame may repeat).
    pub fn select(&self, positions: &[usize]) -> Frames {
        let mut data = Vec::with_capacity(positions.len() * self.frame_len());
        for &position in positions {
            data.extend_from_slice(self.frame(position).data);
        }
        Frames {
            frames: positions.len(),
            height: self.height,
            width: self.width,
            data,
        }
    }

    /// Mirrors every frame left–right.
    pub fn flip_x(&mut self) {
        let row = self.width * 3;
        for line in self.data.chunks_exact_mut(row) {
            for x in 0..self.width / 2 {
                let (a, b) = (x * 3, (self.width - 1 - x) * 3);
                for c in 0..3 {
                    line.swap(a + c, b + c);
                }
            }
        }
    }

    /// Mirrors every frame top–bottom.
    pub fn flip_y(&mut self) {
        let row = self.width * 3;
        let frame_len = self.frame_len();
        if frame_len == 0 {
            return;
        }
        for frame in self.data.chunks_exact_mut(frame_len) {
            for y in 0..self.height / 2 {
                let (top, bottom) = frame.split_at_mut((self.height - 1 - y) * row);
                top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
            }
        }
    }

    /// The clip as the VAE takes it: f32 in [−1, 1] (x / 127.5 − 1), laid out channel-first as
    /// `[3, frames, height, width]`.
    pub fn to_vae_input(&self) -> Vec<f32> {
        let plane = self.frames * self.height * self.width;
        let mut out = vec![0f32; 3 * plane];
        for (pixel, rgb) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + pixel] = rgb[c] as f32 / 127.5 - 1.0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 frames of 2×3 where each byte says (frame, y, x, channel).
    fn sample() -> Frames {
        let mut data = Vec::new();
        for f in 0..2u8 {
            for y in 0..2u8 {
                for x in 0..3u8 {
                    data.extend_from_slice(&[f * 100 + y * 10 + x, 200, c3(f)]);
                }
            }
        }
        Frames::new(2, 2, 3, data).unwrap()
    }

    fn c3(f: u8) -> u8 {
        f + 1
    }

    #[test]
    fn size_is_checked() {
        assert!(Frames::new(1, 2, 2, vec![0; 11]).is_err());
        assert!(Frames::new(1, 2, 2, vec![0; 12]).is_ok());
    }

    #[test]
    fn flips_mirror_each_frame() {
        let mut x = sample();
        x.flip_x();
        assert_eq!(x.pixel(1, 0, 0)[0], 102);
        assert_eq!(x.pixel(1, 0, 2)[0], 100);
        assert_eq!(x.pixel(0, 1, 1)[0], 11);
        let mut y = sample();
        y.flip_y();
        assert_eq!(y.pixel(0, 0, 1)[0], 11);
        assert_eq!(y.pixel(1, 1, 2)[0], 102);
        let mut twice = sample();
        twice.flip_x();
        twice.flip_x();
        twice.flip_y();
        twice.flip_y();
        assert_eq!(twice, sample());
    }

    #[test]
    fn vae_input_is_channel_first_in_minus_one_to_one() {
        let f = sample();
        let v = f.to_vae_input();
        let plane = 2 * 2 * 3;
        assert_eq!(v.len(), 3 * plane);
        // channel 0, frame 1, y 1, x 2 → byte 112, at ((frame·H + y)·W + x) = (2 + 1)·3 + 2
        let (frame, y, x) = (1, 1, 2);
        assert!((v[(frame * 2 + y) * 3 + x] - (112.0 / 127.5 - 1.0)).abs() < 1e-6);
        // channel 1 is 200 everywhere
        assert!((v[plane + 5] - (200.0 / 127.5 - 1.0)).abs() < 1e-6);
        // channel 2, frame 1 → 2
        assert!((v[2 * plane + 6] - (2.0 / 127.5 - 1.0)).abs() < 1e-6);
        let white = Frames::new(1, 1, 1, vec![255, 0, 255])
            .unwrap()
            .to_vae_input();
        assert_eq!(white, vec![1.0, -1.0, 1.0]);
    }

    #[test]
    fn select_repeats_frames() {
        let f = sample();
        let s = f.select(&[1, 1, 0]);
        assert_eq!(s.frames, 3);
        assert_eq!(s.pixel(0, 0, 0)[0], 100);
        assert_eq!(s.pixel(1, 0, 0)[0], 100);
        assert_eq!(s.pixel(2, 0, 0)[0], 0);
    }
}
