//! Windowed pools, and the window geometry (strides, pads incl. `auto_pad`,
//! dilations) Conv, ConvTranspose and the pools share. One-dimensional
//! windows become two-dimensional ones with a unit first axis, so a 1-D
//! conv or pool on `[C, L]` runs as 2-D on `[C, 1, L]`.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::Attrs;
use super::super::reader::Reader;
use crate::error::{Error, Result};
use crate::graph::op::{Pool, PoolKind, Window};

/// Spatial extent `[h, w]` of a `[C, H, W]` or `[C, L]` activation.
pub fn spatial(s: &[usize], what: &str) -> Result<[usize; 2]> {
    match *s {
        [_, l] => Ok([1, l]),
        [_, h, w] => Ok([h, w]),
        _ => Err(Error::unsupported(format!(
            "{what} on an input of shape {s:?} (only 1-D and 2-D)"
        ))),
    }
}

/// Per-axis integer attribute of a `dims`-D window, lifted to 2-D with
/// `unit` on the added axis.
fn two(at: &Attrs, name: &str, dims: usize, unit: usize) -> Result<[usize; 2]> {
    match at.ints(name)? {
        None => Ok([1, 1]),
        Some(v) if v.len() == dims && v.iter().all(|&x| x > 0) => Ok(if dims == 1 {
            [unit, v[0] as usize]
        } else {
            [v[0] as usize, v[1] as usize]
        }),
        Some(v) => Err(Error::input(format!("bad {name} {v:?}"))),
    }
}

/// Strides, pads (incl. `auto_pad`) and dilations of a Conv or pool node
/// with a `dims`-D kernel `k` (lifted to 2-D) on an input of extent `in_hw`.
pub fn window_of(n: &NodeProto, dims: usize, in_hw: [usize; 2], k: [usize; 2]) -> Result<Window> {
    let at = Attrs::of(n);
    let stride = two(&at, "strides", dims, 1)?;
    let dilation = two(&at, "dilations", dims, 1)?;
    let auto = at.choice(
        "auto_pad",
        &["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", ""],
    )?;
    let pads = match auto.as_str() {
        "" | "NOTSET" => match at.ints("pads")? {
            None => [0; 4],
            Some(p) if p.len() == 2 * dims && p.iter().all(|&x| x >= 0) => {
                let p: Vec<usize> = p.iter().map(|&x| x as usize).collect();
                // ONNX order: all begins, then all ends.
                if dims == 1 {
                    [0, p[0], 0, p[1]]
                } else {
                    [p[0], p[1], p[2], p[3]]
                }
            }
            Some(p) => return Err(Error::input(format!("bad pads {p:?}"))),
        },
        "VALID" => [0; 4],
        _ => {
            let mut p = [0; 4];
            for a in 0..2 {
                let out = in_hw[a].div_ceil(stride[a]);
                let total = k[a]
                    .checked_sub(1)
                    .and_then(|x| x.checked_mul(dilation[a]))
                    .and_then(|span| {
                        out.saturating_sub(1)
                            .checked_mul(stride[a])?
                            .checked_add(span + 1)
                    })
                    .ok_or_else(|| {
                        Error::input(format!(
                            "window out of range (kernel {k:?}, dilations {dilation:?})"
                        ))
                    })?
                    .saturating_sub(in_hw[a]);
                let (small, big) = (total / 2, total - total / 2);
                if auto == "SAME_UPPER" {
                    p[a] = small;
                    p[a + 2] = big;
                } else {
                    p[a] = big;
                    p[a + 2] = small;
                }
            }
            p
        }
    };
    // The window arithmetic (padded extent, kernel span) must fit a usize.
    for a in 0..2 {
        let padded = in_hw[a]
            .checked_add(pads[a])
            .and_then(|x| x.checked_add(pads[a + 2]));
        let span = k[a]
            .checked_sub(1)
            .and_then(|x| x.checked_mul(dilation[a]))
            .and_then(|x| x.checked_add(1));
        if padded.is_none() || span.is_none() {
            return Err(Error::input(format!(
                "window out of range (kernel {k:?}, pads {pads:?}, dilations {dilation:?})"
            )));
        }
    }
    Ok(Window {
        stride,
        pads,
        dilation,
    })
}

/// Run `build` on `x` viewed as 2-D: a `[C, L]` input is reshaped to
/// `[C, 1, L]` first and the `[C', 1, L']` result back to `[C', L']`.
pub fn as_2d(
    r: &mut Reader,
    label: &str,
    x: crate::graph::ValueId,
    build: impl FnOnce(&mut Reader, &str, crate::graph::ValueId) -> Result<crate::graph::ValueId>,
) -> Result<crate::graph::ValueId> {
    let s = r.shape(x);
    if s.len() != 2 {
        return build(r, label, x);
    }
    let x2 =
        r.b.reshape(&format!("{label}/to2d"), x, vec![s[0], 1, s[1]])?;
    let y2 = build(r, &format!("{label}/2d"), x2)?;
    let ys = r.shape(y2);
    r.b.reshape(label, y2, vec![ys[0], ys[2]])
}

pub fn pool(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    if n.output.len() > 1 && !n.output[1].is_empty() {
        return Err(Error::unsupported("MaxPool with an Indices output"));
    }
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, &n.op_type)?;
    let s = r.shape(x);
    let hw = spatial(&s, &n.op_type)?;
    let dims = s.len() - 1;
    let at = Attrs::of(n);
    let k = at.ints("kernel_shape")?.unwrap_or_default();
    if k.len() != dims || k.iter().any(|&d| d < 1) {
        return Err(Error::input(format!(
            "bad kernel_shape {k:?} for a {dims}-D pool"
        )));
    }
    let k = if dims == 1 {
        [1, k[0] as usize]
    } else {
        [k[0] as usize, k[1] as usize]
    };
    let window = window_of(n, dims, hw, k)?;
    let kind = if n.op_type == "MaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Avg
    };
    let mut pool = Pool {
        kind,
        kernel: k,
        window,
        ceil: at.int("ceil_mode", 0)? != 0,
    };
    // The network's average pool divides by the real positions in a window
    // (count_include_pad = 0); counting the padding is the same pool on an
    // input padded with explicit zeros.
    let count_pad = kind == PoolKind::Avg
        && pool.window.pads.iter().any(|&p| p > 0)
        && at.int("count_include_pad", 0)? != 0;
    let v = as_2d(r, label, x, |r, l, x| {
        let x = if count_pad {
            let p = pool.window.pads;
            let s = r.shape(x);
            let (map, shape) = crate::graph::index_map::pad(
                &s,
                &[0, p[0] as isize, p[1] as isize],
                &[0, p[2] as isize, p[3] as isize],
                crate::graph::index_map::PadMode::Constant(0.0),
            )?;
            pool.window.pads = [0; 4];
            r.b.gather(&format!("{l}/pad"), &[x], map, shape)?
        } else {
            x
        };
        r.b.pool(l, x, pool)
    })?;
    r.output(n, v);
    Ok(())
}
