//! Charts as SVG and PNG: one x axis (linear or log), one linear y axis, series drawn as
//! points, lines or bands, a legend beside the plot (never over the data). Training curves, scaling plots and evaluation figures all go
//! through [`write`], so every picture mtm draws has the same font, colours and sizes.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// A chart that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: PathBuf,
    /// plotters' message.
    pub message: String,
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A filled circle per point.
    Points,
    /// A line through the points, in order.
    Line,
    /// A lighter line: references such as a baseline.
    Reference,
    /// A faint thin line: noisy raw values under their smoothed line.
    Faint,
    /// A dashed line: a limit such as the ceiling.
    Dashed,
    /// A small hollow circle per point: replicates (seeds) under their mean.
    Replicates,
    /// A shaded region: the points run along the upper edge left to right, then along the
    /// lower edge right to left (an interval band).
    Band,
}

/// One series: its legend label, points `(x, y)` and mark. Points whose coordinates are
/// not finite are left out.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// How to draw them.
    pub mark: Mark,
    /// Index into the palette; series sharing it share a colour (a fit and its points).
    pub colour: usize,
}

/// The x axis's scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Logarithmic (every x must be positive).
    Log,
}

/// A chart: title, axis labels (with units), the x scale and the series.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// x-axis label, with its unit.
    pub x_label: String,
    /// y-axis label, with its unit.
    pub y_label: String,
    /// Scale of the x axis.
    pub x_scale: Scale,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

/// DejaVu Sans (its licence is beside it in `assets/`): PNG text needs a font, and
/// embedding one keeps pictures independent of the fonts a machine happens to have.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// The palette (matplotlib's first six, then its grey at [`GREY`] for references).
const COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(110, 110, 110),
];

/// The palette index of grey, for references (baseline, ceiling) beside coloured series.
pub const GREY: usize = 6;

/// Pixel size of every picture.
const SIZE: (u32, u32) = (860, 560);

/// Draws with `$draw(root, $arg)` into `{stem}.svg` and `{stem}.png`, each under a
/// temporary name renamed when complete (a macro: the drawing functions are generic over
/// plotters' backend, which a closure cannot be).
macro_rules! write_both {
    ($stem:expr, $size:expr, $draw:ident, $arg:expr) => {{
        REGISTER.call_once(|| {
            // Registering the embedded font cannot fail for a valid TTF.
            let _ = register_font("sans-serif", FontStyle::Normal, FONT);
        });
        let mut written = Vec::with_capacity(2);
        for ext in ["svg", "png"] {
            let path = $stem.with_extension(ext);
            // The extension picks the bitmap encoder, so the temporary name keeps it.
            let partial = $stem.with_extension(format!("partial.{ext}"));
            let fail = |message: String| PlotError {
                path: path.clone(),
                message,
            };
            if ext == "svg" {
                $draw(SVGBackend::new(&partial, $size).into_drawing_area(), $arg)
            } else {
                $draw(
                    BitMapBackend::new(&partial, $size).into_drawing_area(),
                    $arg,
                )
            }
            .map_err(fail)?;
            std::fs::rename(&partial, &path).map_err(|e| fail(e.to_string()))?;
            written.push(path);
        }
        Ok(written)
    }};
}

/// Draws `chart` into `{stem}.svg` and `{stem}.png`; returns both paths. Each file is
/// drawn under a temporary name and renamed, so an interrupted run leaves no half picture.
pub fn write(stem: &Path, chart: &Chart) -> Result<Vec<PathBuf>, PlotError> {
    write_both!(stem, SIZE, draw, chart)
}

/// A matrix drawn as coloured cells: rows top to bottom, columns left to right.
#[derive(Clone, Debug)]
pub struct Heatmap {
    /// Panel title.
    pub title: String,
    /// `values[row][column]`; non-finite cells are drawn grey.
    pub values: Vec<Vec<f64>>,
}

/// Heatmaps side by side on one colour scale (0 to the largest value), with a colour bar.
#[derive(Clone, Debug)]
pub struct Heatmaps {
    /// Title above the panels.
    pub title: String,
    /// Label of every panel's x axis, with its unit.
    pub x_label: String,
    /// Label of the y axis (rows).
    pub y_label: String,
    /// What the colour means, with its unit.
    pub value_label: String,
    /// The x value of the left edge of column 0 (e.g. seconds from stimulus onset).
    pub x_origin: f64,
    /// The width of one column in x units.
    pub x_step: f64,
    /// The panels.
    pub panels: Vec<Heatmap>,
}

/// Draws `figure` into `{stem}.svg` and `{stem}.png`, as [`write`] does.
pub fn write_heatmaps(stem: &Path, figure: &Heatmaps) -> Result<Vec<PathBuf>, PlotError> {
    let size = (360 * figure.panels.len().max(1) as u32 + 140, 520);
    write_both!(stem, size, draw_heatmaps, figure)
}

/// Grouped bars: one group per category, one bar per series.
#[derive(Clone, Debug)]
pub struct Bars {
    /// Title above the chart.
    pub title: String,
    /// y-axis label, with its unit.
    pub y_label: String,
    /// The categories along x.
    pub categories: Vec<String>,
    /// `(legend label, one value per category)`; `None` leaves the bar out.
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

/// Draws `bars` into `{stem}.svg` and `{stem}.png`, as [`write`] does.
pub fn write_bars(stem: &Path, bars: &Bars) -> Result<Vec<PathBuf>, PlotError> {
    write_both!(stem, SIZE, draw_bars, bars)
}

/// The colour of `t` in 0..=1 on viridis (five anchors, linearly interpolated).
fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_heatmaps<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    figure: &Heatmaps,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(&figure.title, ("sans-serif", 22)).map_err(e)?;
    let top = figure
        .panels
        .iter()
        .flat_map(|p| p.values.iter().flatten())
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let (width, _) = root.dim_in_pixel();
    let (panels_area, bar_area) = root.split_horizontally(width.saturating_sub(110));
    let areas = panels_area.split_evenly((1, figure.panels.len().max(1)));
    for (k, (panel, area)) in figure.panels.iter().zip(&areas).enumerate() {
        let rows = panel.values.len().max(1);
        let cols = panel.values.first().map_or(1, Vec::len).max(1);
        let x_end = figure.x_origin + cols as f64 * figure.x_step;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(42)
            .y_label_area_size(if k == 0 { 58 } else { 30 })
            .build_cartesian_2d(figure.x_origin..x_end, rows as f64..0.0)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&figure.x_label)
            .y_desc(if k == 0 { figure.y_label.as_str() } else { "" })
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .x_labels(5)
            .x_label_formatter(&|v| compact(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
        chart
            .draw_series(panel.values.iter().enumerate().flat_map(|(r, row)| {
                row.iter().enumerate().map(move |(c, &v)| {
                    let x0 = figure.x_origin + c as f64 * figure.x_step;
                    let colour = if v.is_finite() {
                        viridis(v / top)
                    } else {
                        RGBColor(200, 200, 200)
                    };
                    Rectangle::new(
                        [(x0, r as f64), (x0 + figure.x_step, r as f64 + 1.0)],
                        colour.filled(),
                    )
                })
            }))
            .map_err(e)?;
    }
    // The colour bar: 0 at the bottom, the largest value at the top.
    let mut bar = ChartBuilder::on(&bar_area)
        .margin_top(30)
        .margin_bottom(50)
        .margin_right(8)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, 0.0..top)
        .map_err(e)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(&figure.value_label)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .y_label_formatter(&|v| compact(*v))
        .draw()
        .map_err(e)?;
    let steps = 64;
    bar.draw_series((0..steps).map(|i| {
        let (lo, hi) = (
            top * i as f64 / steps as f64,
            top * (i + 1) as f64 / steps as f64,
        );
        Rectangle::new(
            [(0.0, lo), (1.0, hi)],
            viridis((i as f64 + 0.5) / steps as f64).filled(),
        )
    }))
    .map_err(e)?;
    root.present().map_err(e)
}

fn draw_bars<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, bars: &Bars) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let values = bars
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.1).max(1e-3);
    // Headroom above the tallest bar for the legend.
    let head = ((hi - lo) * 0.3).max(1e-3);
    let groups = bars.categories.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(&bars.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..groups as f64, (lo - pad)..(hi + head))
        .map_err(e)?;
    let categories = bars.categories.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(&bars.y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&move |v| {
            let i = v.floor() as usize;
            if (v - i as f64 - 0.5).abs() < 1e-6 && i < categories.len() {
                categories[i].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| compact(*v))
        .draw()
        .map_err(e)?;
    let n = bars.series.len().max(1) as f64;
    let width = 0.8 / n;
    for (k, (label, values)) in bars.series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        chart
            .draw_series(values.iter().enumerate().filter_map(|(g, v)| {
                let v = (*v)?;
                let x0 = g as f64 + 0.1 + k as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.92, v)],
                    colour.filled(),
                ))
            }))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (groups as f64, 0.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(e)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn finite_points(chart: &Chart) -> impl Iterator<Item = (f64, f64)> + '_ {
    chart.series.iter().flat_map(|s| {
        s.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    })
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let bounds = |values: Vec<f64>| {
        values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            })
    };
    let (x_min, x_max) = bounds(finite_points(chart).map(|p| p.0).collect());
    let (y_min, y_max) = bounds(finite_points(chart).map(|p| p.1).collect());
    if !x_min.is_finite() {
        // Nothing to draw: an empty frame with the title still says what was asked for.
        return draw_in(&root, chart, 0.0..1.0, 0.0..1.0);
    }
    let y_pad = ((y_max - y_min) * 0.08).max(1e-3);
    let y = (y_min - y_pad)..(y_max + y_pad);
    match chart.x_scale {
        Scale::Linear => {
            let pad = ((x_max - x_min) * 0.03).max(1e-3);
            draw_in(&root, chart, (x_min - pad)..(x_max + pad), y)
        }
        Scale::Log => {
            let lo = x_min.max(f64::MIN_POSITIVE) / 1.25;
            draw_in(&root, chart, (lo..x_max * 1.3).log_scale(), y)
        }
    }
}

fn draw_in<DB, X>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    x: X,
    y: std::ops::Range<f64>,
) -> Result<(), String>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    // The legend gets its own panel right of the plot, so that it never covers data.
    let labelled: Vec<&Series> = chart
        .series
        .iter()
        .filter(|s| !s.label.is_empty())
        .collect();
    let (plot_area, legend_area) = if labelled.is_empty() {
        (root.clone(), None)
    } else {
        let width = root.dim_in_pixel().0;
        let (left, right) = root.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
        (left, Some(right))
    };
    let mut ctx = ChartBuilder::on(&plot_area)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    ctx.configure_mesh()
        // A faint grid: on a log axis plotters draws many minor lines.
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.03))
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&|v| compact(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    for s in &chart.series {
        let colour = COLOURS[s.colour % COLOURS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        match s.mark {
            Mark::Points => {
                ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                    .map_err(e)?;
            }
            Mark::Replicates => {
                ctx.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 3, colour.mix(0.7).stroke_width(1))),
                )
                .map_err(e)?;
            }
            Mark::Line => {
                ctx.draw_series(LineSeries::new(points, colour.stroke_width(2)))
                    .map_err(e)?;
            }
            Mark::Reference => {
                ctx.draw_series(LineSeries::new(points, colour.mix(0.8).stroke_width(2)))
                    .map_err(e)?;
            }
            Mark::Faint => {
                ctx.draw_series(LineSeries::new(points, colour.mix(0.25).stroke_width(1)))
                    .map_err(e)?;
            }
            Mark::Dashed => {
                ctx.draw_series(DashedLineSeries::new(points, 8, 5, colour.stroke_width(2)))
                    .map_err(e)?;
            }
            Mark::Band => {
                ctx.draw_series(std::iter::once(Polygon::new(
                    points,
                    colour.mix(0.15).filled(),
                )))
                .map_err(e)?;
            }
        }
    }
    if let Some(area) = legend_area {
        draw_legend(&area, &labelled).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Pixel width of the legend panel beside a chart.
const LEGEND_WIDTH: u32 = 230;

/// The legend: one row per labelled series, its mark and its label, top to bottom.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[&Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = ("sans-serif", 14).into_font().color(&BLACK);
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[s.colour % COLOURS.len()];
        let y = 60 + 24 * k as i32;
        let (x0, x1) = (6, 30);
        match s.mark {
            Mark::Points => area.draw(&Circle::new((18, y), 4, colour.filled()))?,
            Mark::Replicates => area.draw(&Circle::new((18, y), 3, colour.stroke_width(1)))?,
            Mark::Band => area.draw(&Rectangle::new(
                [(x0, y - 6), (x1, y + 6)],
                colour.mix(0.15).filled(),
            ))?,
            Mark::Dashed => {
                for x in [x0, x0 + 10, x0 + 20] {
                    area.draw(&PathElement::new(
                        vec![(x, y), ((x + 6).min(x1), y)],
                        colour.stroke_width(2),
                    ))?;
                }
            }
            Mark::Faint => area.draw(&PathElement::new(
                vec![(x0, y), (x1, y)],
                colour.mix(0.25).stroke_width(1),
            ))?,
            Mark::Line | Mark::Reference => area.draw(&PathElement::new(
                vec![(x0, y), (x1, y)],
                colour.stroke_width(3),
            ))?,
        }
        area.draw(&Text::new(s.label.clone(), (38, y - 8), font.clone()))?;
    }
    Ok(())
}

/// Tick labels without trailing noise: 2000, 0.37, 1.2e-3.
fn compact(v: f64) -> String {
    let a = v.abs();
    // Axis ticks are stepped in floating point, so the tick at zero can arrive as
    // -2.8e-17; no axis this crate draws spans so little that such a value is not zero.
    if a < 1e-12 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(x_scale: Scale) -> Chart {
        Chart {
            title: "training loss".into(),
            x_label: "step".into(),
            y_label: "loss (nats per entry)".into(),
            x_scale,
            series: vec![
                Series {
                    label: "train".into(),
                    points: (1..50).map(|i| (i as f64, 1.0 / i as f64)).collect(),
                    mark: Mark::Line,
                    colour: 0,
                },
                Series {
                    label: "validation".into(),
                    points: vec![(10.0, 0.2), (20.0, f64::NAN), (40.0, 0.05)],
                    mark: Mark::Points,
                    colour: 1,
                },
            ],
        }
    }

    #[test]
    fn charts_are_written_as_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        for (name, scale) in [("linear", Scale::Linear), ("log", Scale::Log)] {
            let paths = write(&dir.path().join(name), &chart(scale)).unwrap();
            let svg = std::fs::read_to_string(&paths[0]).unwrap();
            assert!(svg.contains("<svg") && svg.contains("validation"), "{name}");
            assert!(svg.contains("loss (nats per entry)"), "{name}");
            let png = std::fs::read(&paths[1]).unwrap();
            assert_eq!(&png[1..4], b"PNG");
            assert!(png.len() > 5_000, "a PNG with content: {} bytes", png.len());
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn an_empty_chart_is_still_a_picture() {
        let dir = tempfile::tempdir().unwrap();
        let mut empty = chart(Scale::Linear);
        empty.series.clear();
        let paths = write(&dir.path().join("empty"), &empty).unwrap();
        assert!(
            std::fs::read_to_string(&paths[0])
                .unwrap()
                .contains("training loss")
        );
    }

    #[test]
    fn heatmaps_and_bars_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let panel = |title: &str, scale: f64| Heatmap {
            title: title.into(),
            values: (0..6)
                .map(|r| (0..20).map(|c| scale * (r * c) as f64).collect())
                .collect(),
        };
        let figure = Heatmaps {
            title: "region VISp".into(),
            x_label: "time from stimulus (s)".into(),
            y_label: "unit".into(),
            value_label: "rate (Hz)".into(),
            x_origin: -0.5,
            x_step: 0.02,
            panels: vec![panel("observed", 1.0), panel("predicted", 0.5)],
        };
        let paths = write_heatmaps(&dir.path().join("rasters"), &figure).unwrap();
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(svg.contains("observed") && svg.contains("rate (Hz)") && svg.contains("<rect"));
        let bars = Bars {
            title: "bits per spike".into(),
            y_label: "bits per spike".into(),
            categories: vec!["co-smooth".into(), "forward".into()],
            series: vec![
                ("model".into(), vec![Some(0.2), Some(-0.01)]),
                ("baseline".into(), vec![Some(0.18), None]),
            ],
        };
        let paths = write_bars(&dir.path().join("metrics"), &bars).unwrap();
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(svg.contains("co-smooth") && svg.contains("baseline"));
        assert_eq!(&std::fs::read(&paths[1]).unwrap()[1..4], b"PNG");
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(compact(2000.0), "2000");
        assert_eq!(compact(0.37), "0.37");
        assert_eq!(compact(0.0012), "0.0012");
        assert_eq!(compact(0.00012), "1.2e-4");
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(-2.8e-17), "0");
    }
}
