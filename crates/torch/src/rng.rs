//! Random numbers that never touch libtorch's global generator (the only one tch exposes, through
//! `tch::manual_seed`). Several tests, previews and trainers share one process; a stream of their own
//! per use keeps each one's values fixed however the others interleave.
//!
//! [`torch_randn_values`] is PyTorch's CPU normal algorithm (mt19937 and Box–Muller as
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`), written out:
//! PyTorch's float path (`normal_fill`, for ≥ 16 contiguous values) draws one uniform float per value,
//! `u = (r & (2²⁴ − 1)) · 2⁻²⁴` with `r` the next 32-bit mt19937 output, then turns each block of 16 into
//! normals pairwise, value `j` with value `j + 8`: `ρ = √(−2 ln(1 − u_j))`, `θ = 2π·u_{j+8}`, `n_j = ρ cos θ`,
//! `n_{j+8} = ρ sin θ`. When the count is not a multiple of 16, 16 more uniforms are drawn and the last 16 values
//! are recomputed from them. Fewer than 16 values take the double-precision path: two 53-bit uniforms per pair,
//! the sine kept for the next value. PyTorch evaluates the logarithm and the sine/cosine with vectorised float
//! approximations; they are computed here in double precision and rounded, which agrees to a few units in the last
//! place. mt19937 is seeded with the low 32 bits of the seed, as in PyTorch.

use tch::{Device, Kind, Tensor};

/// The 32-bit Mersenne Twister (Matsumoto & Nishimura 1998) with the standard `init_genrand` seeding.
struct Mt19937 {
    state: [u32; Mt19937::N],
    index: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;
    const MATRIX_A: u32 = 0x9908_b0df;
    const UPPER: u32 = 0x8000_0000;
    const LOWER: u32 = 0x7fff_ffff;

    fn new(seed: u64) -> Mt19937 {
        let mut state = [0u32; Self::N];
        state[0] = seed as u32;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            index: Self::N,
        }
    }

    /// Regenerates the whole state (the "twist").
    fn twist(&mut self) {
        for i in 0..Self::N {
            let y = (self.state[i] & Self::UPPER) | (self.state[(i + 1) % Self::N] & Self::LOWER);
            let mag = if y & 1 == 1 { Self::MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + Self::M) % Self::N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// PyTorch's `random64()`: two outputs, the first in the high half.
    fn next_u64(&mut self) -> u64 {
        let high = self.next_u32() as u64;
        let low = self.next_u32() as u64;
        (high << 32) | low
    }

    /// A float in [0, 1) from 24 random bits (`uniform_real_distribution<float>`).
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A double in [0, 1) from 53 random bits (`uniform_real_distribution<double>`).
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Box–Muller on one block of 16 uniforms, in place: value `j` pairs with value `j + 8`.
fn box_muller_16(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j] as f64; // (0, 1] for the logarithm
        let u2 = block[j + 8] as f64;
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        block[j] = (radius * theta.cos()) as f32;
        block[j + 8] = (radius * theta.sin()) as f32;
    }
}

/// `count` standard normal values, the ones `torch.randn` draws from a fresh CPU generator seeded with `seed`.
pub fn torch_randn_values(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = Mt19937::new(seed);
    if count < 16 {
        // PyTorch's scalar path: normal_distribution<double>, one pair of uniforms per two values.
        let mut out = Vec::with_capacity(count);
        let mut spare: Option<f64> = None;
        while out.len() < count {
            let value = match spare.take() {
                Some(v) => v,
                None => {
                    let u1 = rng.uniform_f64();
                    let u2 = rng.uniform_f64();
                    let radius = (-2.0 * (-u2).ln_1p()).sqrt();
                    let theta = 2.0 * std::f64::consts::PI * u1;
                    spare = Some(radius * theta.sin());
                    radius * theta.cos()
                }
            };
            out.push(value as f32);
        }
        return out;
    }
    let mut values: Vec<f32> = (0..count).map(|_| rng.uniform_f32()).collect();
    for block in values.chunks_exact_mut(16) {
        box_muller_16(block);
    }
    if !count.is_multiple_of(16) {
        let tail = &mut values[count - 16..];
        for u in tail.iter_mut() {
            *u = rng.uniform_f32();
        }
        box_muller_16(tail);
    }
    values
}

/// `count` values uniform in `[low, high)` from mt19937 seeded with `seed` folded to 32 bits, both
/// halves counting (24-bit floats, as `uniform_real_distribution<float>`; not PyTorch's `uniform_`
/// stream, which nothing here needs to reproduce).
pub fn uniform_values(seed: u64, count: usize, low: f32, high: f32) -> Vec<f32> {
    let mut rng = Mt19937::new(seed ^ (seed >> 32));
    (0..count)
        .map(|_| low + (high - low) * rng.uniform_f32())
        .collect()
}

/// A float32 tensor of `shape` on `device` holding [`uniform_values`]. Touches no libtorch generator.
pub fn uniform(
    seed: u64,
    shape: &[i64],
    low: f32,
    high: f32,
    device: Device,
) -> Result<Tensor, tch::TchError> {
    let count = shape.iter().product::<i64>().max(0) as usize;
    Tensor::f_from_slice(&uniform_values(seed, count, low, high))?
        .f_reshape(shape)?
        .f_to_device(device)
}

/// A float32 tensor of `shape` on `device` holding [`torch_randn_values`]. Touches no libtorch generator.
pub fn torch_randn(seed: u64, shape: &[i64], device: Device) -> Result<Tensor, tch::TchError> {
    let count = shape.iter().product::<i64>().max(0) as usize;
    let values = torch_randn_values(seed, count);
    Tensor::f_from_slice(&values)?
        .f_reshape(shape)?
        .f_to_kind(Kind::Float)?
        .f_to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The 10000th output of mt19937 seeded with 5489 is 4123659995 (C++11 [rand.predef]).
        let mut rng = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn uniform_values_stay_in_range_and_depend_on_the_seed_alone() {
        let v = uniform_values(7, 10_000, -0.5, 0.5);
        assert!(v.iter().all(|&x| (-0.5..0.5).contains(&x)));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert_eq!(v, uniform_values(7, 10_000, -0.5, 0.5));
        assert_ne!(v, uniform_values(8, 10_000, -0.5, 0.5));
    }

    #[test]
    fn values_are_standard_normal() {
        let v = torch_randn_values(1, 100_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
