//! Charts of a compression sweep (`maskforge sweep --plot`): one file, four
//! panels side by side, over the pre-defined compression (log x):
//!
//! 1. functional-edge ratio, active / kept (MiCA Fig. 4);
//! 2. effective vs pre-defined compression, log-log, with the line y = x
//!    (no inactive weight);
//! 3. functional-node ratio (MiCA Fig. 9);
//! 4. log10 of the number of effective paths (node-path balancing,
//!    papers/npb-node-path-balancing-abstract.txt).
//!
//! One line per (method, quota), the mean over seeds ([`sweep::series`]);
//! rows with an error are left out, and so are infinite figures (a cut
//! network has an infinite effective compression: its line stops there).
//! The legend sits in a strip under the panels.
//!
//! The format follows the extension: `.svg` or `.png`. Text is laid out (and
//! in PNG rasterised) with Noto Sans embedded in the binary, so no system
//! font is needed; SVG text names the `sans-serif` family for the viewer.
//!
//! ```no_run
//! # let rows: Vec<maskforge::report::sweep::SweepRow> = vec![];
//! maskforge::report::plot::render(&rows, std::path::Path::new("sweep.png"), &[]).unwrap();
//! ```

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind};

use crate::error::{Error, Result};
use crate::report::sweep::{self, Means, Series, SweepRow};

/// Output formats, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// `.svg` or `.png` (any case); anything else is an input error.
    pub fn from_path(path: &Path) -> Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(Error::input(format!(
                "{}: the extension must be .svg or .png",
                path.display()
            ))),
        }
    }
}

/// Width of the whole figure, in pixels (600 per panel).
const WIDTH: u32 = 2400;
/// Height of the title strip.
const TITLE_H: u32 = 44;
/// Height of the row of panels.
const PANEL_H: u32 = 560;
/// Legend: height of one line of entries.
const LEGEND_LINE_H: u32 = 26;
/// The legend entry of the y = x line.
const IDENTITY_LABEL: &str = "y = x (all kept weights active)";
const FONT: &str = "sans-serif";

/// Render `rows` to `path` (SVG or PNG by its extension), atomically and
/// never over one of `inputs`.
pub fn render(rows: &[SweepRow], path: &Path, inputs: &[&Path]) -> Result<()> {
    let bytes = match Format::from_path(path)? {
        Format::Svg => render_svg(rows)?.into_bytes(),
        Format::Png => render_png(rows)?,
    };
    crate::io::fs::write_atomic(path, inputs, |w| {
        use std::io::Write;
        w.write_all(&bytes)
    })
}

/// The chart as an SVG document.
pub(crate) fn render_svg(rows: &[SweepRow]) -> Result<String> {
    let fig = Figure::new(rows)?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, fig.size()).into_drawing_area();
        fig.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

/// The chart as a PNG file (RGB, 8 bits).
pub(crate) fn render_png(rows: &[SweepRow]) -> Result<Vec<u8>> {
    let fig = Figure::new(rows)?;
    let (w, h) = fig.size();
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = Raster::new(&mut rgb, (w, h))?.into_drawing_area();
        fig.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    encode_png(&rgb, w, h)
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(plot_err)?;
    writer.write_image_data(rgb).map_err(plot_err)?;
    writer.finish().map_err(plot_err)?;
    Ok(out)
}

/// The RGB bitmap backend with its own text rasteriser.
///
/// plotters 0.3.7 draws `ab_glyph` text without each glyph's left side
/// bearing and truncates its baseline offset, so letters wobble; here glyphs
/// are placed at their sub-pixel pen positions on one baseline, the text box
/// being the font's line (ascent to descent, `size` pixels high). Everything
/// else is the bitmap backend's.
struct Raster<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

type RasterError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;
type DrawResult = std::result::Result<(), DrawingErrorKind<RasterError>>;

impl<'a> Raster<'a> {
    fn new(rgb: &'a mut [u8], size: (u32, u32)) -> Result<Self> {
        Ok(Raster {
            inner: BitMapBackend::with_buffer_and_format(rgb, size).map_err(plot_err)?,
            font: FontRef::try_from_slice(ttf_noto_sans::REGULAR).map_err(plot_err)?,
        })
    }

    /// Glyphs of `text` at `size` px on a baseline at the font's ascent, and
    /// the width of the line.
    fn layout(&self, text: &str, size: f64) -> (Vec<ab_glyph::Glyph>, f32) {
        let font = self.font.as_scaled(size as f32);
        let mut pen = 0f32;
        let mut prev = None;
        let glyphs = text
            .chars()
            .map(|c| {
                let id = font.glyph_id(c);
                if let Some(p) = prev {
                    pen += font.kern(p, id);
                }
                let g =
                    id.with_scale_and_position(font.scale(), ab_glyph::point(pen, font.ascent()));
                pen += font.h_advance(id);
                prev = Some(id);
                g
            })
            .collect();
        (glyphs, pen)
    }
}

impl DrawingBackend for Raster<'_> {
    type ErrorType = RasterError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> DrawResult {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> DrawResult {
        self.inner.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> DrawResult {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> DrawResult {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> DrawResult {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> DrawResult {
        self.inner.fill_polygon(vert, style)
    }

    fn estimate_text_size<S: plotters_backend::BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<RasterError>> {
        let (_, width) = self.layout(text, style.size());
        Ok((width.ceil() as u32, style.size().ceil() as u32))
    }

    fn draw_text<S: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> DrawResult {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (glyphs, width) = self.layout(text, style.size());
        let (w, h) = (width.ceil() as i32, style.size().ceil() as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let turn = style.transform();
        let (bw, bh) = self.get_size();
        let mut ink = Vec::new();
        for g in glyphs {
            if let Some(o) = self.font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|x, y, coverage| {
                    if coverage > 0.0 {
                        let (x, y) = turn.transform(
                            b.min.x as i32 + x as i32 + dx,
                            b.min.y as i32 + y as i32 + dy,
                        );
                        ink.push(((pos.0 + x, pos.1 + y), coverage));
                    }
                });
            }
        }
        for ((x, y), coverage) in ink {
            if x >= 0 && y >= 0 && x < bw as i32 && y < bh as i32 {
                let c = BackendColor {
                    alpha: color.alpha * coverage.min(1.0) as f64,
                    rgb: color.rgb,
                };
                self.inner.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("plot: {e}"))
}

/// Register the embedded font as plotters' `sans-serif` (once per process).
pub fn ensure_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::internal("plot: the embedded font does not load"))
    }
}

/// Line colours (Tableau 10), cycled.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One curve as drawn: its style and its points (x, mean figures).
struct Curve {
    label: String,
    color: RGBColor,
    /// Marker shape: one per method.
    marker: usize,
    points: Vec<(f64, Means)>,
}

/// Everything the chart needs, computed once for either backend.
struct Figure {
    model: String,
    seeds: usize,
    curves: Vec<Curve>,
    /// Shared x range (pre-defined compression), padded.
    x: Range<f64>,
    /// Width of one legend entry, in pixels.
    legend_item_w: u32,
}

impl Figure {
    fn new(rows: &[SweepRow]) -> Result<Figure> {
        ensure_font()?;
        let first = rows
            .first()
            .ok_or_else(|| Error::input("plot: no sweep rows to plot"))?;
        let series: Vec<Series> = sweep::series(rows);
        let mut methods: Vec<&str> = Vec::new();
        let curves: Vec<Curve> = series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let marker = match methods.iter().position(|m| *m == s.method) {
                    Some(k) => k,
                    None => {
                        methods.push(&s.method);
                        methods.len() - 1
                    }
                };
                let points: Vec<(f64, Means)> = s
                    .points
                    .iter()
                    .filter_map(|p| p.mean.map(|m| (p.target_compression, m)))
                    .collect();
                let label = if points.is_empty() {
                    format!("{} / {} (no successful run)", s.method, s.quota)
                } else {
                    format!("{} / {}", s.method, s.quota)
                };
                Curve {
                    label,
                    color: COLORS[i % COLORS.len()],
                    marker,
                    points,
                }
            })
            .collect();
        // The x range covers what is drawn; with nothing drawn, what was asked.
        let drawn: Vec<f64> = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .collect();
        let xs = if drawn.is_empty() {
            rows.iter().map(|r| r.target_compression).collect()
        } else {
            drawn
        };
        // Seeds that contributed to a mean (all of them if none did).
        let ok: Vec<&SweepRow> = rows.iter().filter(|r| r.is_ok()).collect();
        let counted = if ok.is_empty() {
            rows.iter().collect()
        } else {
            ok
        };
        let mut seeds: Vec<u64> = counted.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        // Legend entries as wide as the longest label (about 8 px a character
        // at 15 px) after the 38 px sample line.
        let longest = curves
            .iter()
            .map(|c| c.label.chars().count())
            .chain([IDENTITY_LABEL.len()])
            .max()
            .unwrap_or(0) as u32;
        Ok(Figure {
            model: first.model.clone(),
            seeds: seeds.len(),
            curves,
            x: log_range(xs.into_iter()),
            legend_item_w: (50 + 8 * longest).min(WIDTH - 40),
        })
    }

    /// Legend entries on one line.
    fn legend_per_line(&self) -> u32 {
        ((WIDTH - 40) / self.legend_item_w).max(1)
    }

    fn legend_lines(&self) -> u32 {
        // The curves plus the y = x entry.
        (self.curves.len() as u32 + 1).div_ceil(self.legend_per_line())
    }

    fn size(&self) -> (u32, u32) {
        (
            WIDTH,
            TITLE_H + PANEL_H + 16 + self.legend_lines() * LEGEND_LINE_H,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        let title = format!(
            "maskforge sweep: {} (mean over {} seed{})",
            self.model,
            self.seeds,
            if self.seeds == 1 { "" } else { "s" }
        );
        let (top, rest) = root.split_vertically(TITLE_H);
        top.draw_text(
            &title,
            &TextStyle::from((FONT, 24).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center)),
            (WIDTH as i32 / 2, TITLE_H as i32 / 2),
        )
        .map_err(plot_err)?;
        let (panels, legend) = rest.split_vertically(PANEL_H);
        let panels = panels.split_evenly((1, 4));
        let lin = 0.0..1.02;
        self.panel(
            &panels[0],
            "Functional-edge ratio (MiCA Fig. 4)",
            "functional-edge ratio (active / kept)",
            RangedCoordf64::from(lin.clone()),
            |m| m.functional_edge_ratio,
            false,
        )?;
        let eff_y = log_range(
            self.curves
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.1.effective_compression))
                .chain([self.x.start, self.x.end]),
        );
        self.panel(
            &panels[1],
            "Effective vs pre-defined compression",
            "effective compression (total / active)",
            eff_y.log_scale(),
            |m| m.effective_compression,
            true,
        )?;
        self.panel(
            &panels[2],
            "Functional-node ratio (MiCA Fig. 9)",
            "functional-node ratio",
            RangedCoordf64::from(lin),
            |m| m.functional_node_ratio,
            false,
        )?;
        let paths_y = linear_range(
            self.curves
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.1.log10_effective_paths)),
        );
        self.panel(
            &panels[3],
            "Effective paths (node-path balancing)",
            "log10 effective paths",
            RangedCoordf64::from(paths_y),
            |m| m.log10_effective_paths,
            false,
        )?;
        self.legend(&legend)
    }

    /// One panel: log x, `y` as given, a line and markers per curve.
    /// `log_log`: the y axis is logarithmic too, and the panel gets y = x.
    fn panel<DB, Y>(
        &self,
        area: &DrawingArea<DB, Shift>,
        title: &str,
        y_desc: &str,
        y: Y,
        figure: fn(&Means) -> f64,
        log_log: bool,
    ) -> Result<()>
    where
        DB: DrawingBackend,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(self.x.clone().log_scale(), y)
            .map_err(plot_err)?;
        let y_fmt = |v: &f64| {
            if log_log {
                fmt_tick(*v)
            } else {
                format!("{v:.1}")
            }
        };
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(if log_log { 10 } else { 11 })
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&y_fmt)
            .x_desc("pre-defined compression (total / kept)")
            .y_desc(y_desc)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .bold_line_style(RGBColor(210, 210, 210))
            .light_line_style(RGBColor(238, 238, 238))
            .max_light_lines(4)
            .draw()
            .map_err(plot_err)?;
        if log_log {
            let (lo, hi) = (self.x.start, self.x.end);
            chart
                .draw_series(DashedLineSeries::new(
                    [(lo, lo), (hi, hi)],
                    8,
                    5,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        let area = chart.plotting_area();
        for c in &self.curves {
            let pts: Vec<(f64, f64)> = c.points.iter().map(|(x, m)| (*x, figure(m))).collect();
            // A non-finite figure (a cut network) breaks the line.
            for seg in pts.split(|p| !p.1.is_finite()) {
                if seg.len() > 1 {
                    area.draw(&PathElement::new(seg.to_vec(), c.color.stroke_width(2)))
                        .map_err(plot_err)?;
                }
                for p in seg {
                    draw_marker(area, *p, c.marker, c.color)?;
                }
            }
        }
        Ok(())
    }

    fn legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let per_line = self.legend_per_line() as usize;
        let style = TextStyle::from((FONT, 15).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let at = |i: usize| {
            (
                20 + (i % per_line) as i32 * self.legend_item_w as i32,
                8 + LEGEND_LINE_H as i32 / 2 + (i / per_line) as i32 * LEGEND_LINE_H as i32,
            )
        };
        for (i, c) in self.curves.iter().enumerate() {
            let (x, y) = at(i);
            area.draw(&PathElement::new(
                vec![(x, y), (x + 30, y)],
                c.color.stroke_width(2),
            ))
            .map_err(plot_err)?;
            draw_marker(area, (x + 15, y), c.marker, c.color)?;
            area.draw_text(&c.label, &style, (x + 38, y))
                .map_err(plot_err)?;
        }
        let (x, y) = at(self.curves.len());
        area.draw(&PathElement::new(
            vec![(x, y), (x + 8, y)],
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(plot_err)?;
        area.draw(&PathElement::new(
            vec![(x + 14, y), (x + 22, y)],
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(plot_err)?;
        area.draw_text(IDENTITY_LABEL, &style, (x + 38, y))
            .map_err(plot_err)
    }
}

/// A marker of shape `kind` (circle, triangle, cross, square, cycled).
fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    kind: usize,
    color: RGBColor,
) -> Result<()>
where
    DB: DrawingBackend,
    CT: plotters::coord::CoordTranslate,
    CT::From: Clone,
{
    match kind % 4 {
        0 => area.draw(&Circle::new(at, 4, color.filled())),
        1 => area.draw(&TriangleMarker::new(at, 6, color.filled())),
        2 => area.draw(&Cross::new(at, 5, color.stroke_width(2))),
        _ => area.draw(&Circle::new(at, 4, color.stroke_width(2))),
    }
    .map_err(plot_err)
}

/// The smallest range in powers of 10^0.1 holding every finite value ≥ 1
/// of `values` (falling back to 1..10), with a little room at both ends.
fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    let pad = 10f64.powf(0.15);
    if hi / lo < 1.5 {
        (lo / 2.0)..(hi * 2.0)
    } else {
        (lo / pad)..(hi * pad)
    }
}

/// The range of the finite `values` with 5 % room at both ends (0..1 when
/// there is none, ±1 around a single value).
fn linear_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-9 {
        return (lo - 1.0)..(hi + 1.0);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad)..(hi + pad)
}

/// A tick label: `1`, `10`, `100`, `1000`, then `1e4`, `1e5`, …; other values
/// with three significant digits.
fn fmt_tick(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return String::new();
    }
    let e = v.log10();
    if (e - e.round()).abs() < 1e-9 {
        let k = e.round() as i32;
        if (0..=3).contains(&k) {
            format!("{}", 10i64.pow(k as u32))
        } else {
            format!("1e{k}")
        }
    } else if v >= 1e4 {
        format!("{v:.1e}")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let digits = (2 - e.floor() as i32).max(0) as usize;
        format!("{v:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sweep::tests::row;

    fn rows() -> Vec<SweepRow> {
        let mut rows = Vec::new();
        for (m, q) in [("rpi", "erk"), ("rpi", "igq"), ("mica", "erk")] {
            for c in [10f64.powf(0.5), 10.0, 100.0, 1000.0] {
                for seed in 0..2 {
                    rows.push(row(m, q, seed, c, true));
                }
            }
        }
        // A cut network: infinite effective compression.
        rows[7].effective_compression = Some(f64::INFINITY);
        rows
    }

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn non_white(rgb: &[u8]) -> usize {
        rgb.chunks(3).filter(|p| p != &[255, 255, 255]).count()
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.SVG")).unwrap(),
            Format::Svg
        );
        assert_eq!(Format::from_path(Path::new("b.png")).unwrap(), Format::Png);
        for p in ["b.pdf", "b", "b.svg.txt"] {
            assert!(matches!(
                Format::from_path(Path::new(p)),
                Err(Error::Input(_))
            ));
        }
    }

    #[test]
    fn svg_renders() {
        let svg = render_svg(&rows()).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "Functional-edge ratio (MiCA Fig. 4)",
            "Effective vs pre-defined compression",
            "Functional-node ratio (MiCA Fig. 9)",
            "Effective paths (node-path balancing)",
            "rpi / igq",
            "mica / erk",
        ] {
            assert!(svg.contains(text), "{text}");
        }
    }

    #[test]
    fn png_renders_lines_and_text() {
        let bytes = render_png(&rows()).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h, rgb) = decode(&bytes);
        assert_eq!((w, h), (WIDTH, TITLE_H + PANEL_H + 16 + LEGEND_LINE_H));
        // Far more than the axes alone: lines, markers and text.
        assert!(non_white(&rgb) > 20_000, "{}", non_white(&rgb));
        // The series colours are there.
        for c in &COLORS[..3] {
            let px = [c.0, c.1, c.2];
            assert!(rgb.chunks(3).any(|p| p == px), "{px:?}");
        }
    }

    #[test]
    fn png_text_renders_without_system_fonts() {
        // The title strip holds text only: it must be inked.
        let bytes = render_png(&rows()).unwrap();
        let (w, _, rgb) = decode(&bytes);
        let title = &rgb[..(w * TITLE_H) as usize * 3];
        assert!(non_white(title) > 500, "{}", non_white(title));
        // And a bare text draw inks pixels through the embedded font.
        let mut buf = vec![255u8; 200 * 40 * 3];
        {
            let root = Raster::new(&mut buf, (200, 40))
                .unwrap()
                .into_drawing_area();
            root.draw_text(
                "maskforge 10^3",
                &(FONT, 20).into_font().color(&BLACK),
                (5, 5),
            )
            .unwrap();
            root.present().unwrap();
        }
        assert!(non_white(&buf) > 100);
    }

    #[test]
    fn error_rows_are_left_out() {
        let good = rows();
        let mut with_errors = good.clone();
        // Failed runs: at a point that has successes, at a new compression,
        // and a series with no success at all.
        with_errors.push(row("rpi", "erk", 2, 10.0, false));
        with_errors.push(row("rpi", "erk", 0, 1e5, false));
        with_errors.push(row("rpi", "erk", 1, 1e5, false));
        let svg = render_svg(&good).unwrap();
        assert_eq!(render_svg(&with_errors).unwrap(), svg);
        assert_eq!(
            render_png(&with_errors).unwrap(),
            render_png(&good).unwrap()
        );
        with_errors.push(row("mica", "igq", 0, 10.0, false));
        let svg = render_svg(&with_errors).unwrap();
        assert!(svg.contains("mica / igq (no successful run)"));
    }

    #[test]
    fn only_failures_still_render() {
        let rows = vec![row("rpi", "erk", 0, 1e6, false)];
        assert!(!render_svg(&rows).unwrap().is_empty());
        assert!(matches!(render_svg(&[]), Err(Error::Input(_))));
    }

    #[test]
    fn writes_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["s.svg", "s.png"] {
            let p = dir.path().join(name);
            render(&rows(), &p, &[]).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        }
        assert!(render(&rows(), &dir.path().join("s.jpg"), &[]).is_err());
    }

    #[test]
    fn linear_ranges_skip_non_finite_values() {
        let r = linear_range([10.0, f64::NEG_INFINITY, 30.0].into_iter());
        assert!((r.start - 9.0).abs() < 1e-12 && (r.end - 31.0).abs() < 1e-12);
        assert_eq!(linear_range([5.0].into_iter()), 4.0..6.0);
        assert_eq!(linear_range([f64::NEG_INFINITY].into_iter()), 0.0..1.0);
    }

    #[test]
    fn ticks() {
        assert_eq!(fmt_tick(1.0), "1");
        assert_eq!(fmt_tick(1000.0), "1000");
        assert_eq!(fmt_tick(1e4), "1e4");
        assert_eq!(fmt_tick(1e6), "1e6");
        assert_eq!(fmt_tick(20.0), "20");
        assert_eq!(fmt_tick(2.5e5), "2.5e5");
        assert_eq!(fmt_tick(3.1622776), "3.16");
        assert_eq!(fmt_tick(0.0), "");
    }
}
