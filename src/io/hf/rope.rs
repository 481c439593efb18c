//! Rotary position embeddings (RoPE) as transformers computes them: the
//! inverse frequencies of each `rope_type` and the cos/sin tables.
//!
//! Dimension `i` of a head and its partner `i + dim/2` rotate together at
//! frequency `inv_freq[i mod dim/2]` (the `rotate_half` convention of Llama,
//! Mistral and Qwen2), so the tables repeat the frequencies twice.
//!
//! ```
//! use maskforge::io::hf::rope::Rope;
//! let r = Rope::default_type(4, 10000.0);
//! // Frequencies 1 and 1/100 for a head of 4; position 0 has cos 1, sin 0.
//! assert_eq!(r.inv_freq.len(), 2);
//! assert!((r.inv_freq[1] - 0.01).abs() < 1e-8); // computed in f32, as transformers does
//! let (cos, sin) = r.tables(3);
//! assert_eq!(cos.shape, vec![3, 4]);
//! assert_eq!(sin.to_f32().unwrap()[..4], [0.0; 4]);
//! ```

use crate::error::Result;
use crate::graph::tensor::ConstTensor;
use crate::io::hf::config::Config;

/// The frequencies of one model's rotary embedding.
#[derive(Clone, Debug)]
pub struct Rope {
    /// One per dimension pair, `dim / 2` of them.
    pub inv_freq: Vec<f64>,
    /// Scales cos and sin (1 except for YaRN-style types, which are refused).
    pub attention_factor: f64,
}

impl Rope {
    /// `1 / theta^(2i / dim)`: the original RoPE.
    pub fn default_type(dim: usize, theta: f64) -> Self {
        let inv_freq = (0..dim / 2)
            .map(|i| {
                // transformers computes this in f32.
                let e = (2 * i) as f32 / dim as f32;
                (1.0 / (theta as f32).powf(e)) as f64
            })
            .collect();
        Self {
            inv_freq,
            attention_factor: 1.0,
        }
    }

    /// The rotary embedding `config` describes for heads of `dim`
    /// (`rope_parameters` in transformers 5, `rope_theta` + `rope_scaling`
    /// before), or an input error for a type not implemented.
    pub fn from_config(config: &Config, dim: usize) -> Result<Self> {
        let params = config.section(&["rope_parameters"]);
        let scaling = config.section(&["rope_scaling"]);
        let theta = match &params {
            Some(p) => p.opt_f64(&["rope_theta"])?,
            None => None,
        }
        .or(config.opt_f64(&["rope_theta"])?)
        .unwrap_or(10000.0);
        let mut rope = Self::default_type(dim, theta);
        let Some(s) = params.or(scaling) else {
            return Ok(rope);
        };
        let kind = s.str_or(&["rope_type", "type"], "default")?.to_string();
        match kind.as_str() {
            "default" => {}
            "linear" => {
                let factor = s.f64_or(&["factor"], 1.0)?;
                for f in &mut rope.inv_freq {
                    *f /= factor;
                }
            }
            "llama3" => rope.llama3(&s)?,
            other => {
                return Err(config.error(format!(
                    "rope type '{other}' is not supported (default, linear and llama3 are)"
                )))
            }
        }
        Ok(rope)
    }

    /// Llama 3.1's frequency-dependent scaling: long wavelengths slowed by
    /// `factor`, short ones kept, the band between interpolated.
    fn llama3(&mut self, s: &Config) -> Result<()> {
        let need = |k: &str| {
            s.opt_f64(&[k])?
                .ok_or_else(|| s.error(format!("llama3 rope needs '{k}'")))
        };
        let factor = need("factor")?;
        let low = need("low_freq_factor")?;
        let high = need("high_freq_factor")?;
        let old = need("original_max_position_embeddings")?;
        let (low_wavelen, high_wavelen) = (old / low, old / high);
        for f in &mut self.inv_freq {
            let wavelen = 2.0 * std::f64::consts::PI / *f;
            if wavelen > low_wavelen {
                *f /= factor;
            } else if wavelen >= high_wavelen {
                let smooth = (old / wavelen - low) / (high - low);
                *f = (1.0 - smooth) * *f / factor + smooth * *f;
            }
        }
        Ok(())
    }

    /// cos and sin of `position * inv_freq`, `[seq, dim]`, each frequency twice.
    pub fn tables(&self, seq: usize) -> (ConstTensor, ConstTensor) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * 2 * half);
        let mut sin = Vec::with_capacity(seq * 2 * half);
        for p in 0..seq {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    // transformers: f32 product, then cos/sin in f32.
                    let angle = (p as f32 * f as f32) as f64;
                    cos.push((angle.cos() * self.attention_factor) as f32);
                    sin.push((angle.sin() * self.attention_factor) as f32);
                }
            }
        }
        (
            ConstTensor::f32(vec![seq, 2 * half], cos),
            ConstTensor::f32(vec![seq, 2 * half], sin),
        )
    }
}
