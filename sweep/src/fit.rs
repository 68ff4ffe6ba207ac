//! Power law with offset, `y(n) = y_inf - b * n^(-alpha)`, fitted by least squares, with
//! bootstrap confidence intervals.
//!
//! For a fixed `alpha` the model is linear in `(y_inf, b)`, solved in closed form; `alpha`
//! is found by a fine grid search over (0, 3] followed by golden-section refinement. Written
//! here because it is twenty lines of arithmetic: a general optimiser crate would add more
//! than it saves, and the profile over `alpha` cannot fall into a wrong local minimum
//! unnoticed on a grid.

use rand::Rng;
use rand::SeedableRng;
use serde::Serialize;

/// A fitted power law.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PowerLaw {
    /// The limit as data grows.
    pub y_inf: f64,
    /// The gap at n = 1.
    pub b: f64,
    /// How fast the gap closes.
    pub alpha: f64,
    /// Root-mean-square residual.
    pub rmse: f64,
}

impl PowerLaw {
    /// Whether `alpha` lies inside the searched range rather than on its edge (0.01 or 3):
    /// on the edge the points do not determine the curve (too few sizes, no trend, or
    /// noise larger than the trend).
    pub fn determined(&self) -> bool {
        self.alpha > 0.011 && self.alpha < 2.99
    }

    /// The curve at `n`.
    pub fn at(&self, n: f64) -> f64 {
        self.y_inf - self.b * n.powf(-self.alpha)
    }
}

/// Which way a fitted curve goes as the data grows, judged by the interval of `b` (the curve
/// rises with `n` exactly when `b > 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trend {
    /// The whole interval of `b` is above 0.
    Rises,
    /// The whole interval of `b` is below 0.
    Falls,
    /// The interval of `b` contains 0: flat within what the points say.
    Flat,
}

impl Trend {
    /// In words, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Trend::Rises => "rises with more sessions",
            Trend::Falls => "FALLS with more sessions",
            Trend::Flat => "flat within its interval",
        }
    }
}

/// A fit with 95 % bootstrap intervals (percentiles 2.5 and 97.5) of each parameter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitWithIntervals {
    /// The fit to all points.
    pub fit: PowerLaw,
    /// Interval of `y_inf`.
    pub y_inf_ci: [f64; 2],
    /// Interval of `b`.
    pub b_ci: [f64; 2],
    /// Interval of `alpha`.
    pub alpha_ci: [f64; 2],
    /// Bootstrap resamples that could be fitted (at least 3 distinct n).
    pub resamples: usize,
    /// The fits to those resamples (for the curve's band; not written to `fits.json`).
    #[serde(skip)]
    pub draws: Vec<PowerLaw>,
}

impl FitWithIntervals {
    /// Whether the points determine the curve: the exponent's whole interval lies inside
    /// the search range (off both edges, so it excludes 0), and the direction of the curve
    /// is known (the interval of `b` excludes 0). A point estimate inside the range is not
    /// enough: an interval spanning the range says the exponent could be anything.
    pub fn determined(&self) -> bool {
        self.resamples > 0
            && self.fit.determined()
            && self.alpha_ci[0] > 0.011
            && self.alpha_ci[1] < 2.99
            && self.trend() != Trend::Flat
    }

    /// The curve's 95 % band at `n`: percentiles 2.5 and 97.5 of the resampled fits
    /// there; `None` without resamples.
    pub fn band_at(&self, n: f64) -> Option<[f64; 2]> {
        percentiles(self.draws.iter().map(|f| f.at(n)).collect())
    }

    /// Which way the curve goes (see [`Trend`]).
    pub fn trend(&self) -> Trend {
        if self.b_ci[0] > 0.0 {
            Trend::Rises
        } else if self.b_ci[1] < 0.0 {
            Trend::Falls
        } else {
            Trend::Flat
        }
    }
}

/// One fitted series of a sweep report (an entry of `fits.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesFit {
    /// The metric (a results column).
    pub metric: String,
    /// The masking scheme of the series.
    pub masking: String,
    /// The model size of the series.
    pub model: String,
    /// `(pretraining sessions, value)`, one per cell (every seed).
    pub points: Vec<(f64, f64)>,
    /// See [`FitWithIntervals::determined`].
    pub determined: bool,
    /// See [`FitWithIntervals::trend`]; `None` without a fit.
    pub trend: Option<Trend>,
    /// The fit, `None` with fewer than 3 session counts.
    pub fit: Option<FitWithIntervals>,
}

/// `fits.json`: every series' fit, and the model they fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitsFile {
    /// The fitted model, in words.
    pub model: String,
    /// The series.
    pub fits: Vec<SeriesFit>,
}

/// Least squares of `y = y_inf - b x` with `x = n^(-alpha)`: (y_inf, b, sse).
fn linear_part(points: &[(f64, f64)], alpha: f64) -> Option<(f64, f64, f64)> {
    let k = points.len() as f64;
    let xs: Vec<f64> = points.iter().map(|(n, _)| n.powf(-alpha)).collect();
    let (mx, my) = (
        xs.iter().sum::<f64>() / k,
        points.iter().map(|p| p.1).sum::<f64>() / k,
    );
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx <= 1e-300 {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(points)
        .map(|(x, p)| (x - mx) * (p.1 - my))
        .sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse = xs
        .iter()
        .zip(points)
        .map(|(x, p)| (p.1 - intercept - slope * x).powi(2))
        .sum();
    Some((intercept, -slope, sse))
}

/// Fits the power law to `(n, y)` points; `None` with fewer than 3 distinct `n`.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let mut distinct: Vec<f64> = points.iter().map(|p| p.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3
        || points
            .iter()
            .any(|p| p.0.is_nan() || p.0 <= 0.0 || !p.1.is_finite())
    {
        return None;
    }
    let sse = |alpha: f64| linear_part(points, alpha).map_or(f64::INFINITY, |r| r.2);
    let grid: Vec<f64> = (1..=300).map(|i| i as f64 * 0.01).collect();
    let best = grid
        .iter()
        .copied()
        .min_by(|a, b| sse(*a).total_cmp(&sse(*b)))?;
    // Golden-section search within one grid step either side.
    let (mut lo, mut hi) = ((best - 0.01).max(1e-4), best + 0.01);
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let (a, b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
        if sse(a) < sse(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    let alpha = (lo + hi) / 2.0;
    let (y_inf, b, sse) = linear_part(points, alpha)?;
    Some(PowerLaw {
        y_inf,
        b,
        alpha,
        rmse: (sse / points.len() as f64).sqrt(),
    })
}

/// The fit and its bootstrap intervals from `resamples` resamples of the points (with
/// replacement), drawn from a stream seeded by `seed`.
pub fn fit_with_intervals(
    points: &[(f64, f64)],
    resamples: usize,
    seed: u64,
) -> Option<FitWithIntervals> {
    let fit = fit_power_law(points)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut draws: Vec<PowerLaw> = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let sample: Vec<(f64, f64)> = (0..points.len())
            .map(|_| points[rng.random_range(0..points.len())])
            .collect();
        if let Some(f) = fit_power_law(&sample) {
            draws.push(f);
        }
    }
    let interval = |get: &dyn Fn(&PowerLaw) -> f64| {
        percentiles(draws.iter().map(get).collect()).unwrap_or([f64::NAN, f64::NAN])
    };
    Some(FitWithIntervals {
        fit,
        y_inf_ci: interval(&|f| f.y_inf),
        b_ci: interval(&|f| f.b),
        alpha_ci: interval(&|f| f.alpha),
        resamples: draws.len(),
        draws,
    })
}

/// Percentiles 2.5 and 97.5 of `v`; `None` when empty.
fn percentiles(mut v: Vec<f64>) -> Option<[f64; 2]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    Some([q(0.025), q(0.975)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth() -> PowerLaw {
        PowerLaw {
            y_inf: 0.31,
            b: 0.22,
            alpha: 0.55,
            rmse: 0.0,
        }
    }

    #[test]
    fn the_fit_recovers_known_parameters() {
        let t = truth();
        let points: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0, 34.0]
            .iter()
            .map(|&n| (n, t.at(n)))
            .collect();
        let f = fit_power_law(&points).unwrap();
        assert!((f.y_inf - t.y_inf).abs() < 1e-6, "{f:?}");
        assert!((f.b - t.b).abs() < 1e-6, "{f:?}");
        assert!((f.alpha - t.alpha).abs() < 1e-5, "{f:?}");
        assert!(f.rmse < 1e-8);
        assert!(f.determined());
        let flat: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&n| (n, 0.1 + 0.01 * n))
            .collect();
        assert!(!fit_power_law(&flat).unwrap().determined());
    }

    #[test]
    fn bootstrap_intervals_cover_the_truth_under_noise() {
        let t = truth();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let points: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
            .iter()
            .flat_map(|&n| [n, n, n])
            .map(|n| (n, t.at(n) + (rng.random::<f64>() - 0.5) * 0.01))
            .collect();
        let r = fit_with_intervals(&points, 500, 1).unwrap();
        assert!(r.resamples > 400);
        assert!(
            r.y_inf_ci[0] <= t.y_inf && t.y_inf <= r.y_inf_ci[1],
            "{r:?}"
        );
        assert!(
            r.alpha_ci[0] <= t.alpha && t.alpha <= r.alpha_ci[1],
            "{r:?}"
        );
        assert!(r.y_inf_ci[1] - r.y_inf_ci[0] < 0.1, "{r:?}");
        for n in [1.0, 5.0, 32.0] {
            let [lo, hi] = r.band_at(n).unwrap();
            assert!(
                lo <= t.at(n) + 0.005 && t.at(n) - 0.005 <= hi,
                "{n}: {lo} {hi}"
            );
            assert!(hi - lo < 0.02, "{n}: {lo} {hi}");
        }
    }

    #[test]
    fn an_interval_spanning_the_range_or_a_flat_curve_is_not_determined() {
        let t = truth();
        let determined = FitWithIntervals {
            fit: t,
            y_inf_ci: [0.3, 0.32],
            b_ci: [0.2, 0.24],
            alpha_ci: [0.4, 0.7],
            resamples: 1000,
            draws: Vec::new(),
        };
        assert!(determined.determined());
        assert_eq!(determined.trend(), Trend::Rises);
        // As the shipped quick sweep reported MtM co-smoothing: alpha anywhere in the range.
        let anywhere = FitWithIntervals {
            alpha_ci: [0.0001, 3.01],
            ..determined.clone()
        };
        assert!(anywhere.fit.determined() && !anywhere.determined());
        let flat = FitWithIntervals {
            b_ci: [-0.05, 0.1],
            ..determined.clone()
        };
        assert_eq!(flat.trend(), Trend::Flat);
        assert!(!flat.determined());
        let falling = FitWithIntervals {
            b_ci: [-0.3, -0.1],
            ..determined
        };
        assert_eq!(falling.trend(), Trend::Falls);
    }

    #[test]
    fn too_few_sizes_give_no_fit() {
        assert!(fit_power_law(&[(1.0, 0.1), (2.0, 0.2), (2.0, 0.25)]).is_none());
    }
}
