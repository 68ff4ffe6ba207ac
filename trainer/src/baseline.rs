//! The standard simple baseline printed beside every activity metric: smoothed spikes and a
//! Poisson GLM per held-out unit (the Neural Latents Benchmark's "smoothing" baseline).
//!
//! For a leave-out task (co-smoothing, intra-, inter-region) each held-out unit's count in a
//! bin is predicted from the units the task leaves visible, in the same bin: their counts
//! smoothed along time with a Gaussian of 50 ms, log-transformed (`ln(s + 1e-4)`, NLB's
//! offset), z-scored per unit on the training split. NLB regresses on every visible unit;
//! here the leave-one-out tasks need one design per held-out unit (hundreds per session), so
//! the visible units are first projected onto the leading [`COMPONENTS`] principal
//! components of the task's visible family (all units for co-smoothing, the region for
//! intra-region, the other regions for inter-region), with the held-out units' columns
//! removed. For forward prediction, each unit's count in each predicted bin comes from the
//! one-sided (causal) smoothed activity of every unit at the last observed bin, plus one
//! intercept per predicted bin (the mean time course).
//!
//! The GLM is scikit-learn's `PoissonRegressor` objective (mean Poisson deviance / 2 plus
//! `alpha / 2 · ‖w‖²`, intercept not penalised), solved by Newton's method with a
//! backtracking line search; its L2 strength is chosen from [`ALPHAS`] by the likelihood of
//! the validation split. Written here rather than taken from linfa-linear's
//! `TweedieRegressor` (the same objective, solved by L-BFGS through argmin and ndarray):
//! a session needs one fit per held-out unit per L2 strength, each with at most
//! [`COMPONENTS`] + 10 unknowns, which a few exact Newton steps on nalgebra (already the
//! decoders' solver) settle to scikit-learn's optimum within 1e-4.

use mtm_dataloader::dataset::Batch;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rayon::prelude::*;

use crate::config::Task;
use crate::heldout::Probe;

/// Standard deviation of the Gaussian smoothing kernel in bins: NLB's 50 ms at the layout's
/// 20 ms bins.
pub const SMOOTH_SD_BINS: f64 = 2.5;
/// Offset inside the logarithm of smoothed counts (NLB's `log_offset`).
pub const LOG_OFFSET: f64 = 1e-4;
/// Principal components of the visible units that each GLM regresses on.
pub const COMPONENTS: usize = 16;
/// L2 strengths tried; the best on the validation split is used (the middle one when the
/// data has no validation trials).
pub const ALPHAS: [f64; 4] = [1e-4, 1e-3, 1e-2, 1e-1];
/// Rows used to estimate a covariance (evenly spaced when there are more).
const COVARIANCE_ROWS: usize = 20_000;

/// A Poisson GLM with log link: `ln E[y] = intercept + coef · x`.
#[derive(Clone, Debug, PartialEq)]
pub struct PoissonGlm {
    /// Weights, one per feature.
    pub coef: Vec<f64>,
    /// Intercept (not penalised).
    pub intercept: f64,
}

impl PoissonGlm {
    /// Fits `y` (n counts) on `x` (n rows of p features, row-major), minimising
    /// `(1/n) Σ (exp(η) − y η) + alpha/2 ‖coef‖²`. A response with no spike gets the rate of
    /// half a spike over the rows (the unpenalised optimum is −∞).
    pub fn fit(x: &[f64], y: &[f64], alpha: f64) -> Self {
        let n = y.len();
        let p = x.len().checked_div(n).unwrap_or(0);
        let total: f64 = y.iter().sum();
        if n == 0 || total <= 0.0 {
            return Self {
                coef: vec![0.0; p],
                intercept: (0.5 / n.max(1) as f64).ln(),
            };
        }
        let eta = |theta: &[f64], row: &[f64]| -> f64 {
            theta[p] + row.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>()
        };
        let objective = |theta: &[f64]| -> f64 {
            let data: f64 = (0..n)
                .map(|i| {
                    let e = eta(theta, &x[i * p..(i + 1) * p]);
                    e.exp() - y[i] * e
                })
                .sum();
            data / n as f64 + 0.5 * alpha * theta[..p].iter().map(|w| w * w).sum::<f64>()
        };
        let mut theta = vec![0.0; p + 1];
        theta[p] = (total / n as f64).ln();
        let mut value = objective(&theta);
        let q = p + 1;
        for _ in 0..100 {
            let mut grad = vec![0.0; q];
            let mut hess = vec![0.0; q * q];
            for i in 0..n {
                let row = &x[i * p..(i + 1) * p];
                let mu = eta(&theta, row).exp();
                let r = mu - y[i];
                for a in 0..p {
                    grad[a] += r * row[a];
                    let m = mu * row[a];
                    let h = &mut hess[a * q..(a + 1) * q];
                    for b in a..p {
                        h[b] += m * row[b];
                    }
                    h[p] += m;
                }
                grad[p] += r;
                hess[p * q + p] += mu;
            }
            let scale = 1.0 / n as f64;
            let mut h = DMatrix::<f64>::zeros(q, q);
            for a in 0..q {
                for b in a..q {
                    let v = hess[a * q + b] * scale;
                    h[(a, b)] = v;
                    h[(b, a)] = v;
                }
            }
            for (a, g) in grad.iter_mut().enumerate() {
                *g *= scale;
                if a < p {
                    *g += alpha * theta[a];
                    h[(a, a)] += alpha;
                }
            }
            let Some(chol) = h.cholesky() else { break };
            let step = chol.solve(&DVector::from_vec(grad.clone()));
            let decrement: f64 = step.iter().zip(&grad).map(|(s, g)| s * g).sum();
            // Also stops on NaN: a decrement that is not a positive number.
            if decrement.is_nan() || decrement <= 1e-16 {
                break;
            }
            let mut t = 1.0;
            let mut accepted = false;
            while t > 1e-12 {
                let candidate: Vec<f64> = theta
                    .iter()
                    .zip(step.iter())
                    .map(|(a, s)| a - t * s)
                    .collect();
                let v = objective(&candidate);
                if v.is_finite() && v <= value - 1e-4 * t * decrement {
                    theta = candidate;
                    value = v;
                    accepted = true;
                    break;
                }
                t *= 0.5;
            }
            if !accepted || decrement < 1e-14 {
                break;
            }
        }
        Self {
            intercept: theta[p],
            coef: theta[..p].to_vec(),
        }
    }

    /// `ln E[y]` for one row of features.
    pub fn log_rate(&self, row: &[f64]) -> f64 {
        self.intercept + row.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f64>()
    }
}

/// The trials a baseline learns from: the training split, and the validation split that
/// chooses the L2 strength (absent or empty: the middle of [`ALPHAS`]).
pub struct FitData<'a> {
    /// Training trials.
    pub train: &'a Batch,
    /// Validation trials.
    pub val: Option<&'a Batch>,
}

/// The baseline's predictions for one task on the evaluated trials.
pub struct Prediction {
    /// Log expected counts `(K, T, N)` at the entries the task scores (0 elsewhere).
    pub log_rates: Vec<f64>,
    /// The L2 strength used.
    pub alpha: f64,
}

/// Predicts the entries `task` scores on `test`. Leave-out tasks score `probes` (every bin
/// of each probe's scored units); forward prediction scores every unit from bin `cut` on.
pub fn predict(
    task: Task,
    probes: &[Probe],
    regions: &[usize],
    cut: usize,
    fit: &FitData,
    test: &Batch,
) -> Prediction {
    match task {
        Task::Forward => predict_forward(cut, fit, test),
        _ => predict_leave_out(task, probes, regions, fit, test),
    }
}

/// Per-trial smoothing along time of `(B, T, N)` counts, then `ln(s + LOG_OFFSET)`. The
/// kernel is a Gaussian of [`SMOOTH_SD_BINS`] truncated at 4 sd and renormalised over the
/// bins inside the trial; `causal` keeps only the current and earlier bins.
fn log_smoothed(batch: &Batch, causal: bool) -> Vec<f64> {
    let (t, n) = (batch.n_bins, batch.n_units);
    let reach = (4.0 * SMOOTH_SD_BINS).ceil() as isize;
    let weight = |d: isize| (-0.5 * (d as f64 / SMOOTH_SD_BINS).powi(2)).exp();
    let mut out = vec![0.0; batch.spikes.len()];
    for k in 0..batch.len() {
        let trial = &batch.spikes[k * t * n..(k + 1) * t * n];
        for bin in 0..t as isize {
            let hi = if causal { 0 } else { reach };
            let (mut total, mut norm) = (vec![0.0; n], 0.0);
            for d in -reach..=hi {
                let s = bin + d;
                if s < 0 || s >= t as isize {
                    continue;
                }
                let w = weight(d);
                norm += w;
                for (acc, &c) in total
                    .iter_mut()
                    .zip(&trial[s as usize * n..(s as usize + 1) * n])
                {
                    *acc += w * f64::from(c);
                }
            }
            let row = &mut out[(k * t + bin as usize) * n..(k * t + bin as usize + 1) * n];
            for (o, v) in row.iter_mut().zip(total) {
                *o = (v / norm + LOG_OFFSET).ln();
            }
        }
    }
    out
}

/// Per-column mean and standard deviation of an `(rows, cols)` matrix (sd floored so that a
/// constant column standardises to 0).
fn column_stats(x: &[f64], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = (x.len() / cols.max(1)).max(1);
    let mut mean = vec![0.0; cols];
    for row in x.chunks(cols) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut var = vec![0.0; cols];
    for row in x.chunks(cols) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let sd = var
        .into_iter()
        .map(|v| (v / rows as f64).sqrt().max(1e-9))
        .collect();
    (mean, sd)
}

fn standardize(x: &mut [f64], cols: usize, mean: &[f64], sd: &[f64]) {
    for row in x.chunks_mut(cols) {
        for ((v, m), s) in row.iter_mut().zip(mean).zip(sd) {
            *v = (*v - m) / s;
        }
    }
}

/// The leading principal directions of the standardised training features restricted to
/// `family`: `k` and a `(|family|, k)` row-major matrix.
fn components(z: &[f64], n: usize, family: &[usize]) -> (usize, Vec<f64>) {
    let f = family.len();
    if f == 0 {
        // Nothing visible (a session with a single region, under inter-region): one
        // all-zero feature, so that the GLM is its intercept, the training mean rate.
        return (1, Vec::new());
    }
    let rows = z.len() / n;
    let stride = rows.div_ceil(COVARIANCE_ROWS).max(1);
    let mut cov = DMatrix::<f64>::zeros(f, f);
    let mut used = 0usize;
    let mut sub = vec![0.0; f];
    for r in (0..rows).step_by(stride) {
        for (s, &u) in sub.iter_mut().zip(family) {
            *s = z[r * n + u];
        }
        for a in 0..f {
            let va = sub[a];
            if va == 0.0 {
                continue;
            }
            for b in a..f {
                cov[(a, b)] += va * sub[b];
            }
        }
        used += 1;
    }
    for a in 0..f {
        for b in 0..a {
            cov[(a, b)] = cov[(b, a)];
        }
    }
    cov /= used.max(1) as f64;
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..f).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let k = COMPONENTS.min(f);
    let mut basis = vec![0.0; f * k];
    for (c, &i) in order.iter().take(k).enumerate() {
        for a in 0..f {
            basis[a * k + c] = eig.eigenvectors[(a, i)];
        }
    }
    (k, basis)
}

/// `(rows, k)` projections of `z`'s `family` columns onto `basis`, leaving out `hidden`.
fn project(
    z: &[f64],
    n: usize,
    family: &[usize],
    basis: &[f64],
    k: usize,
    hidden: &[usize],
) -> Vec<f64> {
    let rows = z.len() / n;
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let row = &z[r * n..(r + 1) * n];
        let o = &mut out[r * k..(r + 1) * k];
        for (a, &u) in family.iter().enumerate() {
            if hidden.contains(&u) {
                continue;
            }
            let v = row[u];
            if v == 0.0 {
                continue;
            }
            for (oc, b) in o.iter_mut().zip(&basis[a * k..(a + 1) * k]) {
                *oc += v * b;
            }
        }
    }
    out
}

/// Standardised log-smoothed features of the train / val / test trials (train statistics).
struct Features {
    n: usize,
    train: Vec<f64>,
    val: Option<Vec<f64>>,
    test: Vec<f64>,
}

impl Features {
    fn new(fit: &FitData, test: &Batch, causal: bool) -> Self {
        let n = test.n_units;
        let mut train = log_smoothed(fit.train, causal);
        let (mean, sd) = column_stats(&train, n);
        let mut prepare = |b: &Batch| {
            let mut v = log_smoothed(b, causal);
            standardize(&mut v, n, &mean, &sd);
            v
        };
        let val = fit.val.filter(|b| !b.is_empty()).map(&mut prepare);
        let test_z = prepare(test);
        standardize(&mut train, n, &mean, &sd);
        Self {
            n,
            train,
            val,
            test: test_z,
        }
    }
}

/// Column `unit` of a `(rows, n)` count matrix.
fn counts_of(batch: &Batch, unit: usize) -> Vec<f64> {
    batch
        .spikes
        .iter()
        .skip(unit)
        .step_by(batch.n_units)
        .map(|&c| f64::from(c))
        .collect()
}

fn poisson_nll(log_rate: f64, y: f64) -> f64 {
    log_rate.exp() - y * log_rate
}

/// Designs (train, val, test) for one probe, standardised on train.
struct Design {
    k: usize,
    train: Vec<f64>,
    val: Option<Vec<f64>>,
    test: Vec<f64>,
}

fn leave_out_design(
    f: &Features,
    family: &[usize],
    basis: &[f64],
    k: usize,
    hidden: &[usize],
) -> Design {
    let mut train = project(&f.train, f.n, family, basis, k, hidden);
    let (mean, sd) = column_stats(&train, k);
    standardize(&mut train, k, &mean, &sd);
    let mut prepared = |z: &[f64]| {
        let mut v = project(z, f.n, family, basis, k, hidden);
        standardize(&mut v, k, &mean, &sd);
        v
    };
    let val = f.val.as_deref().map(&mut prepared);
    let test = prepared(&f.test);
    Design {
        k,
        train,
        val,
        test,
    }
}

/// The units a probe's GLMs may look at through their basis.
fn family(task: Task, probe: &Probe, regions: &[usize]) -> Vec<usize> {
    let n = regions.len();
    match task {
        // The held-out unit's region (every visible unit lies in it).
        Task::Intra => {
            let r = regions[probe.score[0]];
            (0..n).filter(|&u| regions[u] == r).collect()
        }
        // The other regions.
        Task::Inter => (0..n).filter(|u| !probe.zero.contains(u)).collect(),
        _ => (0..n).collect(),
    }
}

fn predict_leave_out(
    task: Task,
    probes: &[Probe],
    regions: &[usize],
    fit: &FitData,
    test: &Batch,
) -> Prediction {
    let features = Features::new(fit, test, false);
    let n = test.n_units;
    // One basis per distinct family, shared by its probes.
    let families: Vec<Vec<usize>> = probes.iter().map(|p| family(task, p, regions)).collect();
    let mut distinct: Vec<Vec<usize>> = families.clone();
    distinct.sort();
    distinct.dedup();
    let bases: Vec<(usize, Vec<f64>)> = distinct
        .par_iter()
        .map(|fam| components(&features.train, n, fam))
        .collect();
    let basis_of = |fam: &Vec<usize>| &bases[distinct.binary_search(fam).expect("present")];
    let design = |i: usize| {
        let fam = &families[i];
        let (k, basis) = basis_of(fam);
        let hidden: Vec<usize> = probes[i]
            .zero
            .iter()
            .copied()
            .filter(|u| fam.contains(u))
            .collect();
        leave_out_design(&features, fam, basis, *k, &hidden)
    };
    // The L2 strength: validation likelihood of a few probes spread over the session.
    let alpha = match fit.val.filter(|b| !b.is_empty()) {
        Some(val) => {
            // Each picked probe's design is built once and shared by every alpha.
            let picked: Vec<(Design, &Probe)> = spread(probes.len(), 6)
                .into_iter()
                .map(|i| (design(i), &probes[i]))
                .collect();
            choose_alpha(|alpha| {
                picked
                    .iter()
                    .flat_map(|(d, probe)| probe.score.iter().map(move |&u| (d, u)))
                    .map(|(d, u)| {
                        let x_val = d.val.as_deref().expect("val present");
                        validation_nll(
                            (&d.train, &counts_of(fit.train, u)),
                            (x_val, &counts_of(val, u)),
                            d.k,
                            alpha,
                        )
                    })
                    .sum()
            })
        }
        None => ALPHAS[ALPHAS.len() / 2],
    };
    let per_probe: Vec<Vec<(usize, Vec<f64>)>> = (0..probes.len())
        .into_par_iter()
        .map(|i| {
            let d = design(i);
            probes[i]
                .score
                .iter()
                .map(|&u| {
                    let glm = PoissonGlm::fit(&d.train, &counts_of(fit.train, u), alpha);
                    (u, d.test.chunks(d.k).map(|row| glm.log_rate(row)).collect())
                })
                .collect()
        })
        .collect();
    let mut log_rates = vec![0.0; test.spikes.len()];
    for (u, rates) in per_probe.into_iter().flatten() {
        for (row, r) in rates.into_iter().enumerate() {
            log_rates[row * n + u] = r;
        }
    }
    Prediction { log_rates, alpha }
}

fn predict_forward(cut: usize, fit: &FitData, test: &Batch) -> Prediction {
    let features = Features::new(fit, test, true);
    let (t, n) = (test.n_bins, test.n_units);
    let horizon = t - cut;
    let all: Vec<usize> = (0..n).collect();
    let (k, basis) = components(&features.train, n, &all);
    // Per trial: the projection of the last observed bin, standardised on train.
    let last = |z: &[f64]| -> Vec<f64> {
        let trials = z.len() / (t * n);
        let rows: Vec<f64> = (0..trials)
            .flat_map(|kk| z[(kk * t + cut - 1) * n..(kk * t + cut) * n].to_vec())
            .collect();
        project(&rows, n, &all, &basis, k, &[])
    };
    let mut train_last = last(&features.train);
    let (mean, sd) = column_stats(&train_last, k);
    standardize(&mut train_last, k, &mean, &sd);
    let prepared = |z: &[f64]| {
        let mut v = last(z);
        standardize(&mut v, k, &mean, &sd);
        v
    };
    let val_last = features.val.as_deref().map(prepared);
    let test_last = prepared(&features.test);
    // Rows (trial, predicted bin): the trial's features, then one indicator per predicted
    // bin after the first (the intercept is the first bin's).
    let p = k + horizon - 1;
    let design = |last: &[f64]| -> Vec<f64> {
        let trials = last.len() / k;
        let mut x = Vec::with_capacity(trials * horizon * p);
        for kk in 0..trials {
            for h in 0..horizon {
                x.extend_from_slice(&last[kk * k..(kk + 1) * k]);
                x.extend((1..horizon).map(|j| f64::from(u8::from(j == h))));
            }
        }
        x
    };
    let future = |batch: &Batch, u: usize| -> Vec<f64> {
        (0..batch.len())
            .flat_map(|kk| (cut..t).map(move |bin| (kk, bin)))
            .map(|(kk, bin)| f64::from(batch.spikes[(kk * t + bin) * n + u]))
            .collect()
    };
    let (x_train, x_test) = (design(&train_last), design(&test_last));
    let x_val = val_last.as_deref().map(design);
    let alpha = match (fit.val.filter(|b| !b.is_empty()), &x_val) {
        (Some(val), Some(xv)) => choose_alpha(|alpha| {
            spread(n, 16)
                .into_iter()
                .map(|u| {
                    validation_nll(
                        (&x_train, &future(fit.train, u)),
                        (xv, &future(val, u)),
                        p,
                        alpha,
                    )
                })
                .sum()
        }),
        _ => ALPHAS[ALPHAS.len() / 2],
    };
    let per_unit: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|u| {
            let glm = PoissonGlm::fit(&x_train, &future(fit.train, u), alpha);
            x_test.chunks(p).map(|row| glm.log_rate(row)).collect()
        })
        .collect();
    let mut log_rates = vec![0.0; test.spikes.len()];
    for (u, rates) in per_unit.into_iter().enumerate() {
        for (row, r) in rates.into_iter().enumerate() {
            let (kk, h) = (row / horizon, row % horizon);
            log_rates[(kk * t + cut + h) * n + u] = r;
        }
    }
    Prediction { log_rates, alpha }
}

/// Up to `count` indices spread evenly over `0..len`.
fn spread(len: usize, count: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..count.min(len))
        .map(|i| i * len / count.min(len))
        .collect();
    out.dedup();
    out
}

/// The strength in [`ALPHAS`] whose validation loss, `loss(alpha)`, is lowest.
fn choose_alpha(loss: impl Fn(f64) -> f64 + Sync) -> f64 {
    let losses: Vec<f64> = ALPHAS.par_iter().map(|&alpha| loss(alpha)).collect();
    let best = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(ALPHAS.len() / 2, |(i, _)| i);
    ALPHAS[best]
}

/// Poisson NLL on `(x_val, y_val)` of the GLM fit to `(x_train, y_train)` with `alpha`;
/// rows have `p` features.
fn validation_nll(
    (x_train, y_train): (&[f64], &[f64]),
    (x_val, y_val): (&[f64], &[f64]),
    p: usize,
    alpha: f64,
) -> f64 {
    let glm = PoissonGlm::fit(x_train, y_train, alpha);
    y_val
        .iter()
        .zip(x_val.chunks(p))
        .map(|(&y, row)| poisson_nll(glm.log_rate(row), y))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn batch(trials: usize, spikes: Vec<f32>) -> Batch {
        Batch {
            session: 0,
            split: mtm_dataloader::session::Split::Train,
            trials: (0..trials as u32).collect(),
            n_bins: 10,
            n_units: 3,
            spikes,
            behaviour: Default::default(),
        }
    }

    #[test]
    fn with_nothing_visible_the_baseline_is_the_training_mean_rate() {
        // One region: inter-region hides every unit.
        let regions = [0, 0, 0];
        let probes = crate::heldout::probes(Task::Inter, &regions, 1);
        let counts: Vec<f32> = (0..20 * 30)
            .map(|i| ((i * 7) % 5 == 0) as u8 as f32)
            .collect();
        let train = batch(20, counts.clone());
        let test = batch(4, counts[..4 * 30].to_vec());
        let fit = FitData {
            train: &train,
            val: None,
        };
        let out = predict(Task::Inter, &probes, &regions, 9, &fit, &test);
        for u in 0..3 {
            let mean = counts.iter().skip(u).step_by(3).sum::<f32>() as f64 / 200.0;
            for row in 0..40 {
                let got = out.log_rates[row * 3 + u];
                assert!(
                    (got - mean.ln()).abs() < 1e-6,
                    "unit {u}: {got} vs {}",
                    mean.ln()
                );
            }
        }
    }

    #[test]
    fn the_glm_recovers_known_weights() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, p) = (20_000, 3);
        let truth = [0.5, -0.3, 0.2];
        let x: Vec<f64> = (0..n * p).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<f64> = x
            .chunks(p)
            .map(|row| {
                let rate = (-1.0 + row.iter().zip(&truth).map(|(a, b)| a * b).sum::<f64>()).exp();
                // Poisson by inversion.
                let u: f64 = rng.random();
                let (mut k, mut prob) = (0.0, (-rate).exp());
                let mut cdf = prob;
                while u > cdf {
                    k += 1.0;
                    prob *= rate / k;
                    cdf += prob;
                }
                k
            })
            .collect();
        let glm = PoissonGlm::fit(&x, &y, 0.0);
        for (w, t) in glm.coef.iter().zip(truth) {
            assert!((w - t).abs() < 0.05, "{w} vs {t}");
        }
        assert!((glm.intercept + 1.0).abs() < 0.05, "{}", glm.intercept);
        // A strong penalty shrinks the weights towards zero.
        let shrunk = PoissonGlm::fit(&x, &y, 10.0);
        assert!(
            shrunk.coef.iter().all(|w| w.abs() < 0.05),
            "{:?}",
            shrunk.coef
        );
        // No spike at all: a finite, low rate.
        let silent = PoissonGlm::fit(&x, &vec![0.0; n], 0.1);
        assert!(silent.intercept.is_finite() && silent.intercept < -5.0);
    }
}
