//! Compression sweeps: prune one model at a range of pre-defined compressions
//! with several methods and quotas, and record direct vs effective figures
//! per run (the data behind MiCA's Figs. 4 and 9; `maskforge sweep`).
//!
//! A sweep runs every (method, quota, compression, seed) in that nesting
//! order, seeds `0..K`. Each run prunes with [`prune_with`] (direct
//! target, `effective: false`) and audits the *raw* masks.
//! A run that fails on an input error (typically a quota that is infeasible
//! at that compression) becomes a row with an `error` and no figures; an
//! internal failure stops the sweep.
//!
//! ```
//! use maskforge::report::sweep::parse_compressions;
//! // log10 exponents a:b:step: 10^1, 10^2, 10^3
//! let c = parse_compressions("1:3:1").unwrap();
//! assert_eq!(c.len(), 3);
//! assert!((c[2] - 1000.0).abs() < 1e-9);
//! // or a comma list of ratios
//! assert_eq!(parse_compressions("10,1e3").unwrap(), vec![10.0, 1000.0]);
//! ```
//!
//! ```no_run
//! use maskforge::{zoo, report::sweep::{self, SweepConfig}};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let cfg = SweepConfig::parse("rpi,mica", "erk,igq", "0.5:3:0.5", 2).unwrap();
//! let rows = sweep::run(&net, "zoo:lenet300", &cfg, |done, all| eprintln!("{done}/{all}")).unwrap();
//! print!("{}", sweep::to_csv(&rows));
//! ```

use std::path::Path;

use serde::Serialize;

use crate::analysis::audit::{audit_with, Paths};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::methods::prune::{prune_with, Method, PruneSpec};
use crate::methods::quota::{self, Quota};

/// A quota with its name (as [`Quota::name`] writes it).
#[derive(Clone, Debug)]
pub struct QuotaChoice {
    pub name: String,
    pub quota: Quota,
}

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub methods: Vec<Method>,
    pub quotas: Vec<QuotaChoice>,
    /// Pre-defined (target) compressions, each ≥ 1.
    pub compressions: Vec<f64>,
    /// Seeds `0..seeds`.
    pub seeds: u64,
    /// The layers pruned (`None`: the network's defaults); targets and the
    /// figures of every row count the selected layers only.
    pub selection: Option<crate::methods::selection::Selection>,
}

impl SweepConfig {
    /// Parse the command-line lists: methods (`rpi,mica`), quotas
    /// (`erk,igq`), compressions (see [`parse_compressions`]) and a seed count.
    pub fn parse(methods: &str, quotas: &str, compressions: &str, seeds: u64) -> Result<Self> {
        let methods = split_list("methods", methods)?
            .into_iter()
            .map(|m| m.to_ascii_lowercase().parse::<Method>())
            .collect::<Result<Vec<_>>>()?;
        let quotas = split_list("quotas", quotas)?
            .into_iter()
            .map(|s| {
                s.parse::<Quota>()
                    .map(|quota| QuotaChoice {
                        name: quota.name(),
                        quota,
                    })
                    .map_err(|e| e.context("quotas"))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(q) = quotas
            .iter()
            .find(|q| matches!(q.quota, Quota::Scored(s) if s.needs_data()))
        {
            return Err(Error::input(format!(
                "quotas: {} needs calibration data, which a sweep does not take",
                q.name
            )));
        }
        if let Some(m) = methods
            .iter()
            .find(|m| matches!(m, Method::Scored(s, _) if s.needs_data()))
        {
            return Err(Error::input(format!(
                "methods: {m} needs calibration data, which a sweep does not take"
            )));
        }
        let method_names: Vec<String> = methods.iter().map(Method::to_string).collect();
        no_repeats("methods", method_names.iter().map(String::as_str))?;
        no_repeats("quotas", quotas.iter().map(|q| q.name.as_str()))?;
        let compressions = parse_compressions(compressions)?;
        if seeds == 0 {
            return Err(Error::input("seeds: at least 1"));
        }
        Ok(SweepConfig {
            methods,
            quotas,
            compressions,
            seeds,
            selection: None,
        })
    }

    /// Number of runs (rows) the sweep makes.
    pub fn runs(&self) -> usize {
        self.methods.len() * self.quotas.len() * self.compressions.len() * self.seeds as usize
    }
}

/// Split a comma list, refusing empty items.
fn split_list<'a>(what: &str, s: &'a str) -> Result<Vec<&'a str>> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(Error::input(format!(
            "{what} '{s}': empty item in the list"
        )));
    }
    Ok(items)
}

/// Refuse a name given twice (it would duplicate every row).
fn no_repeats<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for n in names {
        if seen.contains(&n) {
            return Err(Error::input(format!("{what}: '{n}' given twice")));
        }
        seen.push(n);
    }
    Ok(())
}

/// Most compressions one spec may ask for.
const MAX_COMPRESSIONS: usize = 1000;

/// Parse a compression spec: `a:b:step`, log10 exponents from `a` to `b`
/// inclusive (`0.5:6:0.5` is 10^0.5, 10^1, …, 10^6: 12 values), or a comma
/// list of ratios in any form `--compression` accepts (`10,100,1e3,10^3.5`).
/// Every compression must be ≥ 1 (exponents ≥ 0).
pub fn parse_compressions(spec: &str) -> Result<Vec<f64>> {
    let spec = spec.trim();
    let bad = |why: String| Error::input(format!("compressions '{spec}': {why}"));
    let values = if spec.contains(':') {
        let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
        let [a, b, step] = parts[..] else {
            return Err(bad("expected a:b:step (log10 exponents)".into()));
        };
        let num = |s: &str| -> Result<f64> {
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("'{s}' is not a number")))
        };
        let (a, b, step) = (num(a)?, num(b)?, num(step)?);
        if step <= 0.0 {
            return Err(bad("the step must be positive".into()));
        }
        if b < a {
            return Err(bad("the end exponent is below the start".into()));
        }
        let steps = (b - a) / step;
        // Tolerate float noise so that 0.5:6:0.5 ends exactly at 10^6.
        let n = (steps + 1e-9).floor();
        if n + 1.0 > MAX_COMPRESSIONS as f64 {
            return Err(bad(format!("more than {MAX_COMPRESSIONS} compressions")));
        }
        (0..=n as usize)
            .map(|i| 10f64.powf(a + i as f64 * step))
            .collect::<Vec<_>>()
    } else {
        let items = split_list("compressions", spec)?;
        if items.len() > MAX_COMPRESSIONS {
            return Err(bad(format!("more than {MAX_COMPRESSIONS} compressions")));
        }
        items
            .into_iter()
            .map(|s| quota::parse_ratio(s).map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>>>()?
    };
    if let Some(c) = values.iter().find(|c| !(c.is_finite() && **c >= 1.0)) {
        return Err(bad(format!(
            "compression {c} is below 1 (a compression is total/kept; exponents start at 0)"
        )));
    }
    Ok(values)
}

/// One run of a sweep: a CSV row. Figures are `None` when the run failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepRow {
    pub model: String,
    pub method: String,
    pub quota: String,
    pub seed: u64,
    /// The pre-defined compression asked for.
    pub target_compression: f64,
    /// total / kept (infinite when nothing is kept).
    pub direct_compression: Option<f64>,
    /// total / active (infinite when the network is cut).
    pub effective_compression: Option<f64>,
    /// active / kept (0 when nothing is kept); MiCA Fig. 4.
    pub functional_edge_ratio: Option<f64>,
    /// Functional nodes over nodes reached from the input; MiCA Fig. 9.
    pub functional_node_ratio: Option<f64>,
    pub kept: Option<usize>,
    pub active: Option<usize>,
    /// Prunable weights of the model (of its selected layers when
    /// `--include`/`--exclude` or the model's defaults leave some dense:
    /// `kept`, `active` and the compressions count those too).
    pub total: usize,
    /// Why the run failed (an input error: e.g. the quota is infeasible).
    pub error: Option<String>,
    /// NPB: log10 of the number of effective input -> output paths of the
    /// raw masks; `-inf` when none is left (`null` in JSON).
    pub log10_effective_paths: Option<f64>,
    /// NPB: output units of the prunable layers on some effective path.
    pub effective_nodes: Option<usize>,
}

impl SweepRow {
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Run the sweep `cfg` on `net` (`model_name` goes in every row).
/// `progress(done, all)` is called before the first run and after each one.
///
/// Input errors of a run become rows with an `error`; an internal failure
/// stops the sweep and is returned.
pub fn run(
    net: &Network,
    model_name: &str,
    cfg: &SweepConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SweepRow>> {
    let sel = cfg
        .selection
        .clone()
        .unwrap_or_else(|| crate::methods::selection::Selection::defaults(net));
    let total = sel.selected_weights(net);
    let ctx = crate::methods::scored::Context {
        selection: Some(sel.clone()),
        ..Default::default()
    };
    let all = cfg.runs();
    let mut rows = Vec::with_capacity(all);
    progress(0, all);
    for &method in &cfg.methods {
        for q in &cfg.quotas {
            for &c in &cfg.compressions {
                for seed in 0..cfg.seeds {
                    // Recomputed per seed (it is cheap) so that an infeasible
                    // compression is recorded in every row it concerns.
                    let outcome = quota::target_from_compression(total, c)
                        .and_then(|t| {
                            let spec = PruneSpec {
                                method,
                                quota: q.quota.clone(),
                                target_kept: t,
                                seed,
                                effective: false,
                            };
                            prune_with(net, &spec, &ctx, &mut |_, _| {})
                        })
                        .and_then(|o| {
                            let (selected, _) = sel.totals(net, &o.raw, o.effective());
                            Ok((selected, audit_with(net, &o.raw, o.analysis, Paths::Count)?))
                        });
                    let mut row = SweepRow {
                        model: model_name.to_string(),
                        method: method.to_string(),
                        quota: q.name.clone(),
                        seed,
                        target_compression: c,
                        direct_compression: None,
                        effective_compression: None,
                        functional_edge_ratio: None,
                        functional_node_ratio: None,
                        kept: None,
                        active: None,
                        total,
                        error: None,
                        log10_effective_paths: None,
                        effective_nodes: None,
                    };
                    match outcome {
                        Ok((t, r)) => {
                            row.direct_compression = Some(t.direct_compression);
                            row.effective_compression = Some(t.effective_compression);
                            row.functional_edge_ratio = Some(if t.kept == 0 {
                                0.0
                            } else {
                                t.active as f64 / t.kept as f64
                            });
                            row.functional_node_ratio = Some(r.functional_node_ratio);
                            row.kept = Some(t.kept);
                            row.active = Some(t.active);
                            row.log10_effective_paths = r.paths.map(|p| p.log10_effective_paths);
                            row.effective_nodes = Some(r.effective_nodes);
                        }
                        Err(e) if !e.is_internal() => row.error = Some(e.to_string()),
                        Err(e) => {
                            return Err(e.context(format!(
                                "sweep: {} with quota {} at compression {c} (seed {seed})",
                                row.method, row.quota
                            )))
                        }
                    }
                    rows.push(row);
                    progress(rows.len(), all);
                }
            }
        }
    }
    Ok(rows)
}

/// The CSV header (the contract's column order; columns added later go at
/// the end, so positions never change).
pub const CSV_HEADER: &str = "model,method,quota,seed,target_compression,direct_compression,\
effective_compression,functional_edge_ratio,functional_node_ratio,kept,active,total,error,\
log10_effective_paths,effective_nodes";

/// Rows as CSV (RFC 4180 quoting, `\n` line ends). Missing figures are empty
/// fields; infinite ones are `inf` (`-inf` for the log10 path count of a cut
/// network). Floats are written in full precision.
pub fn to_csv(rows: &[SweepRow]) -> String {
    fn f(x: Option<f64>) -> String {
        match x {
            Some(v) if v.is_infinite() && v > 0.0 => "inf".into(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
    fn n(x: Option<usize>) -> String {
        x.map(|v| v.to_string()).unwrap_or_default()
    }
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let fields = [
            csv_field(&r.model),
            csv_field(&r.method),
            csv_field(&r.quota),
            r.seed.to_string(),
            f(Some(r.target_compression)),
            f(r.direct_compression),
            f(r.effective_compression),
            f(r.functional_edge_ratio),
            f(r.functional_node_ratio),
            n(r.kept),
            n(r.active),
            r.total.to_string(),
            csv_field(r.error.as_deref().unwrap_or("")),
            f(r.log10_effective_paths),
            n(r.effective_nodes),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Write [`to_csv`] atomically to `path`, never over one of `inputs`.
pub fn write_csv(rows: &[SweepRow], path: &Path, inputs: &[&Path]) -> Result<()> {
    let text = to_csv(rows);
    crate::io::fs::write_atomic(path, inputs, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes())
    })
}

/// Mean figures over the successful seeds of one point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Means {
    pub direct_compression: f64,
    pub effective_compression: f64,
    pub functional_edge_ratio: f64,
    pub functional_node_ratio: f64,
    /// The mean of the log10 path counts (their geometric mean); `-inf` when
    /// a seed left no path.
    pub log10_effective_paths: f64,
    pub effective_nodes: f64,
}

/// One pre-defined compression of a series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeanPoint {
    pub target_compression: f64,
    /// Runs that succeeded (the means are over these).
    pub ok: usize,
    /// Runs that failed (rows with an `error`).
    pub failed: usize,
    /// `None` when every run at this point failed.
    pub mean: Option<Means>,
}

/// One (method, quota) curve: its points by increasing target compression.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub method: String,
    pub quota: String,
    pub points: Vec<MeanPoint>,
}

/// Group rows into one series per (method, quota), in order of first
/// appearance, with the mean over seeds at each target compression. Rows
/// with an error count in `failed` and never enter a mean. A mean with an
/// infinite figure (a cut network) is infinite.
pub fn series(rows: &[SweepRow]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        let idx = match out
            .iter()
            .position(|s| s.method == r.method && s.quota == r.quota)
        {
            Some(i) => i,
            None => {
                out.push(Series {
                    method: r.method.clone(),
                    quota: r.quota.clone(),
                    points: Vec::new(),
                });
                out.len() - 1
            }
        };
        let s = &mut out[idx];
        let p = match s
            .points
            .iter()
            .position(|p| p.target_compression == r.target_compression)
        {
            Some(i) => &mut s.points[i],
            None => {
                s.points.push(MeanPoint {
                    target_compression: r.target_compression,
                    ok: 0,
                    failed: 0,
                    mean: None,
                });
                s.points.last_mut().expect("just pushed")
            }
        };
        let figures = (
            r.direct_compression,
            r.effective_compression,
            r.functional_edge_ratio,
            r.functional_node_ratio,
            r.log10_effective_paths,
            r.effective_nodes,
        );
        match (r.is_ok(), figures) {
            (true, (Some(d), Some(e), Some(fe), Some(fnode), Some(paths), Some(nodes))) => {
                // Running sums; divided once all rows are in.
                let m = p.mean.get_or_insert(Means {
                    direct_compression: 0.0,
                    effective_compression: 0.0,
                    functional_edge_ratio: 0.0,
                    functional_node_ratio: 0.0,
                    log10_effective_paths: 0.0,
                    effective_nodes: 0.0,
                });
                m.direct_compression += d;
                m.effective_compression += e;
                m.functional_edge_ratio += fe;
                m.functional_node_ratio += fnode;
                m.log10_effective_paths += paths;
                m.effective_nodes += nodes as f64;
                p.ok += 1;
            }
            _ => p.failed += 1,
        }
    }
    for s in &mut out {
        for p in &mut s.points {
            if let Some(m) = &mut p.mean {
                let k = p.ok as f64;
                m.direct_compression /= k;
                m.effective_compression /= k;
                m.functional_edge_ratio /= k;
                m.functional_node_ratio /= k;
                m.log10_effective_paths /= k;
                m.effective_nodes /= k;
            }
        }
        s.points
            .sort_by(|a, b| a.target_compression.total_cmp(&b.target_compression));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::methods::prune::prune;

    fn close(a: f64, b: f64) -> bool {
        ((a - b) / b).abs() < 1e-12
    }

    pub(crate) fn row(method: &str, quota: &str, seed: u64, c: f64, ok: bool) -> SweepRow {
        let total = 1000;
        let kept = (total as f64 / c).round() as usize;
        let active = kept * 9 / 10;
        SweepRow {
            model: "zoo:test".into(),
            method: method.into(),
            quota: quota.into(),
            seed,
            target_compression: c,
            direct_compression: ok.then(|| total as f64 / kept as f64),
            effective_compression: ok.then(|| total as f64 / active as f64),
            functional_edge_ratio: ok.then(|| active as f64 / kept as f64),
            functional_node_ratio: ok.then_some(0.8),
            kept: ok.then_some(kept),
            active: ok.then_some(active),
            total,
            error: (!ok).then(|| "quota erk is infeasible at 1000x, \"layer fc1\"".into()),
            log10_effective_paths: ok.then(|| 20.0 - c.log10()),
            effective_nodes: ok.then_some(400),
        }
    }

    #[test]
    fn log_range_gives_twelve_values() {
        let c = parse_compressions("0.5:6:0.5").unwrap();
        assert_eq!(c.len(), 12);
        assert!(close(c[0], 10f64.powf(0.5)));
        assert!(close(c[1], 10.0));
        assert!(close(c[11], 1e6));
        assert!(c.windows(2).all(|w| close(w[1] / w[0], 10f64.powf(0.5))));
    }

    #[test]
    fn log_range_edge_cases() {
        assert_eq!(parse_compressions("3:3:1").unwrap().len(), 1);
        assert_eq!(parse_compressions("0:1:0.1").unwrap().len(), 11);
        assert!(close(
            parse_compressions("0:1:0.3").unwrap()[3],
            10f64.powf(0.9)
        ));
        for bad in [
            "1:2", "1:2:0", "2:1:1", "a:2:1", "-1:2:1", "0:1:-1", "0:9999:1",
        ] {
            assert!(
                matches!(parse_compressions(bad), Err(Error::Input(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ratio_lists() {
        let c = parse_compressions("10,100,1e3,10^3").unwrap();
        assert_eq!(c, vec![10.0, 100.0, 1000.0, 1000.0]);
        let c = parse_compressions("10^3.5, 2").unwrap();
        assert!(close(c[0], 10f64.powf(3.5)));
        assert_eq!(c[1], 2.0);
        assert_eq!(parse_compressions("1000").unwrap(), vec![1000.0]);
        for bad in ["", "10,", "abc", "0.5", "10,,100"] {
            assert!(
                matches!(parse_compressions(bad), Err(Error::Input(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_parsing() {
        let cfg = SweepConfig::parse("rpi, MICA", "erk,IGQ,uniform+", "1:3:1", 4).unwrap();
        assert_eq!(
            cfg.methods,
            vec![
                Method::Rpi,
                Method::Mica(crate::methods::random::mica::MicaChoice::Rand)
            ]
        );
        let names: Vec<&str> = cfg.quotas.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["erk", "igq", "uniform+"]);
        assert_eq!(cfg.runs(), 2 * 3 * 3 * 4);
        for (m, q, c, k) in [
            ("snip", "erk", "1", 1),
            ("rpi", "grasp", "1", 1),
            ("rpi", "nope", "1", 1),
            ("rpi,rpi", "erk", "1", 1),
            ("rpi", "erk,ERK", "1", 1),
            ("rpi", "erk", "1", 0),
            ("rpi", "erk", "0.1", 1),
        ] {
            assert!(
                SweepConfig::parse(m, q, c, k).is_err_and(|e| !e.is_internal()),
                "{m} {q} {c} {k}"
            );
        }
        for m in ["rpi", "mica", "mica-min", "mica-max"] {
            assert_eq!(m.parse::<Method>().unwrap().to_string(), m);
        }
    }

    #[test]
    fn run_records_failures_as_rows() {
        let net = crate::zoo::build("lenet5", 0).unwrap();
        let cfg = SweepConfig::parse("rpi,mica", "igq,smart", "10,1e3", 2).unwrap();
        let mut calls = Vec::new();
        let rows = run(&net, "zoo:lenet5", &cfg, |d, a| calls.push((d, a))).unwrap();
        assert_eq!(rows.len(), 16);
        assert_eq!(calls.first(), Some(&(0, 16)));
        assert_eq!(calls.last(), Some(&(16, 16)));
        // Nesting order: method, quota, compression, seed.
        let key = |r: &SweepRow| {
            (
                r.method.clone(),
                r.quota.clone(),
                r.target_compression,
                r.seed,
            )
        };
        assert_eq!(key(&rows[0]), ("rpi".into(), "igq".into(), 10.0, 0));
        assert_eq!(key(&rows[1]), ("rpi".into(), "igq".into(), 10.0, 1));
        assert_eq!(key(&rows[2]), ("rpi".into(), "igq".into(), 1000.0, 0));
        assert_eq!(key(&rows[8]), ("mica".into(), "igq".into(), 10.0, 0));
        for r in &rows {
            assert_eq!(r.total, net.prunable_count());
            if r.quota == "igq" {
                assert!(r.is_ok(), "{r:?}");
                let (kept, active) = (r.kept.unwrap(), r.active.unwrap());
                assert_eq!(
                    kept,
                    quota::target_from_compression(r.total, r.target_compression).unwrap()
                );
                assert_eq!(r.functional_edge_ratio, Some(active as f64 / kept as f64));
                if r.method == "mica" {
                    assert_eq!(active, kept);
                }
                // The NPB figures are those of an audit of the same masks.
                let spec = PruneSpec {
                    method: r.method.parse().unwrap(),
                    quota: cfg
                        .quotas
                        .iter()
                        .find(|q| q.name == r.quota)
                        .unwrap()
                        .quota
                        .clone(),
                    target_kept: kept,
                    seed: r.seed,
                    effective: false,
                };
                let masks = prune(&net, &spec).unwrap().raw;
                let a = crate::analysis::audit::audit(&net, &masks).unwrap();
                let log10 = a.paths.unwrap().log10_effective_paths;
                assert_eq!(r.log10_effective_paths, Some(log10));
                assert_eq!(r.effective_nodes, Some(a.effective_nodes));
                // Every LeNet-5 path crosses a prunable layer: paths are
                // left exactly when some weight is active.
                assert_eq!(log10.is_finite(), active > 0, "{r:?}");
                assert_eq!(a.effective_nodes > 0, active > 0, "{r:?}");
            } else {
                // SmartRatios keeps 30 % of LeNet-5's dense layers: infeasible here.
                assert!(r.error.is_some() && r.kept.is_none(), "{r:?}");
            }
        }
    }

    #[test]
    fn csv_has_header_and_one_row_per_run() {
        let rows = vec![
            row("rpi", "erk", 0, 10.0, true),
            row("rpi", "erk", 1, 10.0, true),
            row("mica", "igq", 0, 1000.0, false),
        ];
        let csv = to_csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + rows.len());
        // The original columns keep their positions; NPB columns follow.
        assert_eq!(
            lines[0],
            "model,method,quota,seed,target_compression,direct_compression,effective_compression,\
functional_edge_ratio,functional_node_ratio,kept,active,total,error,\
log10_effective_paths,effective_nodes"
        );
        assert_eq!(
            lines[1],
            "zoo:test,rpi,erk,0,10,10,11.11111111111111,0.9,0.8,100,90,1000,,19,400"
        );
        // The failed run: empty figures, quoted error with its comma and quotes.
        assert_eq!(
            lines[3],
            "zoo:test,mica,igq,0,1000,,,,,,,1000,\
\"quota erk is infeasible at 1000x, \"\"layer fc1\"\"\",,"
        );
        assert!(csv.ends_with('\n'));
    }

    #[test]
    fn csv_writes_inf() {
        let mut r = row("rpi", "erk", 0, 10.0, true);
        r.effective_compression = Some(f64::INFINITY);
        assert!(to_csv(&[r]).lines().nth(1).unwrap().contains(",inf,"));
        // A cut network has no path: -inf, not an empty (failed) field.
        let mut r = row("rpi", "erk", 0, 10.0, true);
        r.log10_effective_paths = Some(f64::NEG_INFINITY);
        assert!(to_csv(&[r]).lines().nth(1).unwrap().ends_with(",-inf,400"));
    }

    #[test]
    fn series_average_seeds_and_skip_errors() {
        let mut rows = vec![
            row("rpi", "erk", 0, 100.0, true),
            row("rpi", "erk", 0, 10.0, true),
            row("rpi", "erk", 1, 10.0, true),
            row("rpi", "erk", 2, 10.0, false),
            row("mica", "erk", 0, 10.0, false),
        ];
        rows[2].functional_node_ratio = Some(0.6);
        rows[2].log10_effective_paths = Some(17.0);
        rows[2].effective_nodes = Some(300);
        let s = series(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].method.as_str(), s[0].quota.as_str()), ("rpi", "erk"));
        let p: Vec<f64> = s[0].points.iter().map(|p| p.target_compression).collect();
        assert_eq!(p, vec![10.0, 100.0]);
        let at10 = &s[0].points[0];
        assert_eq!((at10.ok, at10.failed), (2, 1));
        assert!(close(at10.mean.unwrap().functional_node_ratio, 0.7));
        assert!(close(at10.mean.unwrap().log10_effective_paths, 18.0));
        assert!(close(at10.mean.unwrap().effective_nodes, 350.0));
        assert_eq!(s[1].points[0].mean, None);
        assert_eq!(s[1].points[0].failed, 1);
    }
}
