//! Where and how the VAE's activations live: compute kind, device and memory layout.
//!
//! cuDNN runs bf16 3-D convolutions on tensor cores in the channels-last (NDHWC) layout; in the default NCDHW
//! layout libtorch transposes around each convolution or picks slower kernels. tch has no memory-format argument,
//! so channels-last tensors are made by allocating `[B, T, H, W, C]` and permuting the view to `[B, C, T, H, W]`:
//! libtorch recognises those strides as `channels_last_3d`, and elementwise ops and convolutions keep them.

use tch::{Device, Kind, TchError, Tensor};

/// Memory layout of activations and convolution weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeLayout {
    /// NCDHW, libtorch's default; used on the CPU.
    Contiguous,
    /// NDHWC (`channels_last_3d`); used on CUDA.
    ChannelsLast,
}

impl VaeLayout {
    /// Channels-last on CUDA (cuDNN's fast path), contiguous on the CPU.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            VaeLayout::ChannelsLast
        } else {
            VaeLayout::Contiguous
        }
    }
}

/// Compute kind, device and layout shared by every layer of one VAE.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exec {
    pub kind: Kind,
    pub device: Device,
    pub layout: VaeLayout,
}

impl Exec {
    /// An uninitialised activation `[B, C, T, H, W]` in this layout.
    pub fn empty(&self, [b, c, t, h, w]: [i64; 5]) -> Result<Tensor, TchError> {
        let options = (self.kind, self.device);
        match self.layout {
            VaeLayout::Contiguous => Tensor::f_empty([b, c, t, h, w], options),
            VaeLayout::ChannelsLast => {
                Tensor::f_empty([b, t, h, w, c], options)?.f_permute([0, 4, 1, 2, 3])
            }
        }
    }

    /// A convolution weight `[O, I, kt, kh, kw]` in this layout (weights of failed loads pass unchanged).
    pub fn weight_layout(&self, weight: Tensor) -> Tensor {
        if self.layout == VaeLayout::Contiguous || weight.dim() != 5 || weight.numel() == 0 {
            return weight;
        }
        weight
            .permute([0, 2, 3, 4, 1])
            .contiguous()
            .permute([0, 4, 1, 2, 3])
    }

    /// Nearest-neighbour 2× in H and W of `[B, C', T, H, W]` (nearest-exact and nearest agree for a factor of 2).
    /// With `time_halves`, the channels are first split in two halves that become consecutive frames:
    /// output frame 2t + i is half i of input frame t (`upsample3d`'s temporal step). One copy either way.
    pub fn upsample_nearest(&self, x: &Tensor, time_halves: bool) -> Result<Tensor, TchError> {
        let [b, c_in, t, h, w] = super::layers::dims5(x)?;
        let (c, k) = if time_halves {
            (c_in / 2, 2)
        } else {
            (c_in, 1)
        };
        match self.layout {
            VaeLayout::Contiguous => {
                // [B, C, T, k, H, 1, W, 1] -> expand -> [B, C, T·k, 2H, 2W]
                let frames = if time_halves {
                    x.f_reshape([b, 2, c, t, h, w])?
                        .f_permute([0, 2, 3, 1, 4, 5])?
                } else {
                    x.f_unsqueeze(3)?
                };
                frames
                    .f_unsqueeze(5)?
                    .f_unsqueeze(7)?
                    .f_expand([b, c, t, k, h, 2, w, 2], false)?
                    .f_reshape([b, c, t * k, 2 * h, 2 * w])
            }
            VaeLayout::ChannelsLast => {
                // Physical order [B, T, k, H, 1, W, 1, C] -> expand -> [B, T·k, 2H, 2W, C], viewed as NCDHW.
                let physical = x.f_permute([0, 2, 3, 4, 1])?;
                let frames = if time_halves {
                    physical
                        .f_reshape([b, t, h, w, 2, c])?
                        .f_permute([0, 1, 4, 2, 3, 5])?
                } else {
                    physical.f_unsqueeze(2)?
                };
                frames
                    .f_unsqueeze(4)?
                    .f_unsqueeze(6)?
                    .f_expand([b, t, k, h, 2, w, 2, c], false)?
                    .f_reshape([b, t * k, 2 * h, 2 * w, c])?
                    .f_permute([0, 4, 1, 2, 3])
            }
        }
    }
}
