//! Exponential moving average of the LoRA weights (`ema_config`), kept in fp32 on the device:
//! ema ← decay·ema + (1 − decay)·w after every optimizer step.

use tch::Tensor;

pub struct Ema {
    pub decay: f64,
    pub shadow: Tensor,
}

impl Ema {
    /// Starts from the current weights (a flat fp32 buffer).
    pub fn new(flat: &Tensor, decay: f64) -> Ema {
        Ema {
            decay,
            shadow: flat.detach().copy(),
        }
    }

    pub fn update(&mut self, flat: &Tensor) {
        tch::no_grad(|| {
            let _ = self.shadow.lerp_(&flat.detach(), 1.0 - self.decay);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_weights_geometrically() {
        let w = Tensor::from_slice(&[0.0f32]);
        let mut e = Ema::new(&w, 0.9);
        let one = Tensor::from_slice(&[1.0f32]);
        for _ in 0..10 {
            e.update(&one);
        }
        let want = 1.0 - 0.9f64.powi(10);
        assert!((e.shadow.double_value(&[0]) - want).abs() < 1e-6);
    }
}
