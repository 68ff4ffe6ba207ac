//! Charts as SVG and PNG: one x axis (linear or log), one linear y axis, series drawn as
//! points or lines, a legend. Training curves, scaling plots and evaluation figures all go
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

/// The palette (matplotlib's first six).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Pixel size of every picture.
const SIZE: (u32, u32) = (800, 560);

/// Draws `chart` into `{stem}.svg` and `{stem}.png`; returns both paths. Each file is
/// drawn under a temporary name and renamed, so an interrupted run leaves no half picture.
pub fn write(stem: &Path, chart: &Chart) -> Result<Vec<PathBuf>, PlotError> {
    REGISTER.call_once(|| {
        // Registering the embedded font cannot fail for a valid TTF.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let mut written = Vec::with_capacity(2);
    for ext in ["svg", "png"] {
        let path = stem.with_extension(ext);
        // The extension picks the bitmap encoder, so the temporary name keeps it.
        let partial = stem.with_extension(format!("partial.{ext}"));
        let fail = |message: String| PlotError {
            path: path.clone(),
            message,
        };
        if ext == "svg" {
            draw(SVGBackend::new(&partial, SIZE).into_drawing_area(), chart)
        } else {
            draw(
                BitMapBackend::new(&partial, SIZE).into_drawing_area(),
                chart,
            )
        }
        .map_err(fail)?;
        std::fs::rename(&partial, &path).map_err(|e| fail(e.to_string()))?;
        written.push(path);
    }
    Ok(written)
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
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    ctx.configure_mesh()
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
        let drawn = match s.mark {
            Mark::Points => ctx
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                .map_err(|e| e.to_string())?,
            Mark::Line => ctx
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?,
            Mark::Reference => ctx
                .draw_series(LineSeries::new(points, colour.mix(0.8).stroke_width(2)))
                .map_err(|e| e.to_string())?,
        };
        if !s.label.is_empty() {
            drawn.label(&s.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3))
            });
        }
    }
    if chart.series.iter().any(|s| !s.label.is_empty()) {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Tick labels without trailing noise: 2000, 0.37, 1.2e-3.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
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
    fn tick_labels_are_compact() {
        assert_eq!(compact(2000.0), "2000");
        assert_eq!(compact(0.37), "0.37");
        assert_eq!(compact(0.0012), "0.0012");
        assert_eq!(compact(0.00012), "1.2e-4");
        assert_eq!(compact(0.0), "0");
    }
}
