//! Spatial tiling: a large frame is encoded or decoded as overlapping tiles whose seams are blended linearly.
//!
//! The grid and the blend are diffusers' (`AutoencoderKLWan.tiled_encode/tiled_decode`), so results match it:
//! tiles start every `stride = size − overlap` pixels (the last ones are cut by the frame edge); tiles are visited
//! row by row, each one's first `overlap` rows are blended with the tail of the (already blended) tile above and
//! its first `overlap` columns with the tail of the tile to its left, and each tile then contributes its first
//! `stride` rows and columns. Only the previous row of tiles is kept, not the whole grid.

use super::encoder::Region;
use crate::ModelError;
use tch::{Kind, TchError, Tensor};

/// When and how to tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilingMode {
    /// Tile frames with more than `Tiling::auto_above_pixels` pixels.
    Auto,
    /// Tile every frame larger than one tile.
    Always,
    /// Never tile.
    Never,
}

/// Spatial tiling settings, in pixels (multiples of 8; of 16 for the Wan 2.2 VAE, whose network tiles its 2×2-patchified
/// frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub mode: TilingMode,
    /// Tile height and width.
    pub size: i64,
    /// Pixels shared by neighbouring tiles and blended.
    pub overlap: i64,
    /// In `Auto` mode, frames with more pixels than this are tiled.
    pub auto_above_pixels: i64,
}

impl Default for Tiling {
    /// Untiled up to 480×832 (decoding 81 such frames fits well under 12 GiB); larger frames in 384-pixel tiles
    /// with 64 pixels of overlap, six tiles for 480×832 when forced.
    fn default() -> Self {
        Tiling {
            mode: TilingMode::Auto,
            size: 384,
            overlap: 64,
            auto_above_pixels: 480 * 832,
        }
    }
}

impl Tiling {
    pub fn never() -> Self {
        Tiling {
            mode: TilingMode::Never,
            ..Tiling::default()
        }
    }

    pub fn always(size: i64, overlap: i64) -> Self {
        Tiling {
            mode: TilingMode::Always,
            size,
            overlap,
            ..Tiling::default()
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.size <= 0 || self.size % 8 != 0 || self.overlap < 0 || self.overlap % 8 != 0 {
            return Err(ModelError::Input(format!(
                "VAE tile size {} and overlap {} must be multiples of 8 pixels",
                self.size, self.overlap
            )));
        }
        if self.overlap >= self.size {
            return Err(ModelError::Input(format!(
                "VAE tile overlap {} must be smaller than the tile size {}",
                self.overlap, self.size
            )));
        }
        Ok(())
    }

    /// These settings counted in `patch × patch` pixel patches (the Wan 2.2 VAE's network tiles its patchified
    /// frames); an error when they are not whole multiples of 8 patches.
    pub fn in_patches(&self, patch: i64) -> Result<Tiling, ModelError> {
        if self.size % (8 * patch) != 0 || self.overlap % (8 * patch) != 0 {
            return Err(ModelError::Input(format!(
                "VAE tile size {} and overlap {} must be multiples of {} pixels for this VAE",
                self.size,
                self.overlap,
                8 * patch
            )));
        }
        Ok(Tiling {
            size: self.size / patch,
            overlap: self.overlap / patch,
            ..*self
        })
    }

    /// Whether a frame of `height × width` pixels is tiled.
    pub fn applies(&self, height: i64, width: i64) -> bool {
        let larger_than_a_tile = height > self.size || width > self.size;
        match self.mode {
            TilingMode::Never => false,
            TilingMode::Always => larger_than_a_tile,
            TilingMode::Auto => larger_than_a_tile && height * width > self.auto_above_pixels,
        }
    }
}

/// One tiling pass: tiles are cut from the input in input units (latents when decoding, pixels when encoding);
/// their outputs are placed and blended in output units (pixels when decoding, latents when encoding).
pub(crate) struct TileGrid {
    pub input_size: i64,
    pub input_stride: i64,
    pub output_stride: i64,
    pub output_blend: i64,
}

impl TileGrid {
    /// Decoding: tiles of latents, outputs in pixels.
    pub fn for_decode(t: &Tiling) -> Self {
        TileGrid {
            input_size: t.size / 8,
            input_stride: (t.size - t.overlap) / 8,
            output_stride: t.size - t.overlap,
            output_blend: t.overlap,
        }
    }

    /// Encoding: tiles of pixels, outputs in latents.
    pub fn for_encode(t: &Tiling) -> Self {
        TileGrid {
            input_size: t.size,
            input_stride: t.size - t.overlap,
            output_stride: (t.size - t.overlap) / 8,
            output_blend: t.size / 8 - (t.size - t.overlap) / 8,
        }
    }

    /// Runs `tile` on every tile of an `input_height × input_width` frame and assembles the blended result
    /// into `out` `[B, C, T, H_out, W_out]` (float32).
    pub fn run(
        &self,
        input_height: i64,
        input_width: i64,
        out: &mut Tensor,
        mut tile: impl FnMut(Region) -> Result<Tensor, ModelError>,
    ) -> Result<(), ModelError> {
        let size = out.size();
        let (out_h, out_w) = (size[3], size[4]);
        let starts = |extent: i64| (0..extent).step_by(self.input_stride as usize);
        let columns: Vec<i64> = starts(input_width).collect();
        let mut above: Vec<Option<Tensor>> = columns.iter().map(|_| None).collect();
        for (row, top) in starts(input_height).enumerate() {
            let mut left: Option<Tensor> = None;
            for (col, &start) in columns.iter().enumerate() {
                let region = Region {
                    top,
                    left: start,
                    height: self.input_size.min(input_height - top),
                    width: self.input_size.min(input_width - start),
                };
                let mut current = tile(region)?.f_to_kind(Kind::Float)?;
                if let Some(upper) = &above[col] {
                    blend(upper, &mut current, self.output_blend, 3)?;
                }
                if let Some(previous) = &left {
                    blend(previous, &mut current, self.output_blend, 4)?;
                }
                let (y, x) = (
                    row as i64 * self.output_stride,
                    col as i64 * self.output_stride,
                );
                let cs = current.size();
                let h = self.output_stride.min(cs[3]).min(out_h - y);
                let w = self.output_stride.min(cs[4]).min(out_w - x);
                if h > 0 && w > 0 {
                    out.f_narrow(3, y, h)?
                        .f_narrow(4, x, w)?
                        .f_copy_(&current.f_narrow(3, 0, h)?.f_narrow(4, 0, w)?)?;
                }
                above[col] = Some(current.shallow_clone());
                left = Some(current);
            }
        }
        Ok(())
    }
}

/// Blends the first `extent` rows (`dim` 3) or columns (`dim` 4) of `current` with the last ones of `previous`:
/// `current[i] = previous[n − e + i]·(1 − i/e) + current[i]·(i/e)`, `e = min(extent, both sizes)`.
fn blend(previous: &Tensor, current: &mut Tensor, extent: i64, dim: i64) -> Result<(), TchError> {
    let (n_prev, n_cur) = (previous.size()[dim as usize], current.size()[dim as usize]);
    let e = extent.min(n_prev).min(n_cur);
    if e <= 0 {
        return Ok(());
    }
    // The weights i/e, made on the device (a host-to-device copy would stall the GPU queue).
    let mut shape = vec![1i64; 5];
    shape[dim as usize] = e;
    let weight = Tensor::f_arange(e, (Kind::Float, current.device()))?
        .f_div_scalar(e as f64)?
        .f_reshape(shape)?;
    let tail = previous.f_narrow(dim, n_prev - e, e)?;
    let mut head = current.f_narrow(dim, 0, e)?;
    let blended = tail
        .f_mul(&weight.f_neg()?.f_add_scalar(1.0)?)?
        .f_add(&head.f_mul(&weight)?)?;
    head.f_copy_(&blended)?;
    Ok(())
}
