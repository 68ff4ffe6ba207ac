//! Behaviour decoders of spec §4: L2 logistic regression for choice (C by 4-fold CV over
//! 1e-4..1e4) and ridge regression for whisker motion energy (alpha by 4-fold CV over
//! {0, 10, 1e2, 1e3, 1e4}), on standardised features.
//!
//! Features are the predicted log-rates of a trial, flattened (100 x N: up to 10^5 wide)
//! while trials number hundreds, so both models are solved in the trials' kernel space
//! (the representer theorem): the Gram matrix of the training trials is eigendecomposed
//! once per fold and every regularisation value costs a small solve. Results equal the
//! primal solutions (sklearn's `LogisticRegression` / `Ridge` with intercept), including
//! alpha = 0, which becomes the minimum-norm least-squares fit. Written here because no
//! maintained Rust crate offers high-dimensional CV'd logistic and ridge regression.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The grid of inverse regularisation strengths for choice (sklearn's C).
pub const LOGISTIC_C: [f64; 9] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4];
/// The grid of ridge penalties for whisker motion energy.
pub const RIDGE_ALPHA: [f64; 5] = [0.0, 10.0, 1e2, 1e3, 1e4];
/// Cross-validation folds.
pub const FOLDS: usize = 4;

/// A decoder's test score next to its chance level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeScore {
    /// `accuracy` (choice) or `r2` (whisker).
    pub metric: String,
    /// The score on the test trials.
    pub value: f64,
    /// Majority-class accuracy, or 0 for R² (predicting the training mean).
    pub chance: f64,
    /// The regularisation chosen by cross-validation (C or alpha).
    pub regularisation: f64,
    /// Trials the final model was fitted on.
    pub fit_trials: usize,
    /// Trials scored.
    pub test_trials: usize,
    /// Trials left out of fitting and scoring because their target is missing (NaN).
    #[serde(default)]
    pub missing_trials: usize,
}

/// Kernels of standardised features: fit x fit and test x fit.
struct Kernels {
    fit: DMatrix<f64>,
    cross: DMatrix<f64>,
}

/// Standardises the columns with the fit rows' statistics and forms the Gram matrices.
fn kernels(fit: &[f32], test: &[f32], dim: usize) -> Kernels {
    let (n_fit, n_test) = (fit.len() / dim, test.len() / dim);
    let mut mean = vec![0.0f64; dim];
    let mut sq = vec![0.0f64; dim];
    for row in fit.chunks_exact(dim) {
        for ((m, s), &x) in mean.iter_mut().zip(&mut sq).zip(row) {
            *m += f64::from(x);
            *s += f64::from(x) * f64::from(x);
        }
    }
    let scale: Vec<(f32, f32)> = mean
        .iter()
        .zip(&sq)
        .map(|(&m, &s)| {
            let mu = m / n_fit as f64;
            let var = (s / n_fit as f64 - mu * mu).max(0.0);
            let inv = if var > 1e-12 { 1.0 / var.sqrt() } else { 0.0 };
            (mu as f32, inv as f32)
        })
        .collect();
    let standardise = |rows: &[f32], n: usize| {
        DMatrix::<f32>::from_fn(n, dim, |i, j| (rows[i * dim + j] - scale[j].0) * scale[j].1)
    };
    let xf = standardise(fit, n_fit);
    let xt = standardise(test, n_test);
    Kernels {
        fit: (&xf * xf.transpose()).map(f64::from),
        cross: (&xt * xf.transpose()).map(f64::from),
    }
}

/// An eigendecomposed, centred training kernel and the matching centring of new rows.
struct Basis {
    vectors: DMatrix<f64>,
    values: DVector<f64>,
    col_mean: DVector<f64>,
    all_mean: f64,
}

impl Basis {
    fn new(k: &DMatrix<f64>) -> Self {
        let n = k.nrows();
        let col_mean = DVector::from_fn(n, |j, _| k.column(j).mean());
        let all_mean = col_mean.mean();
        let centred = DMatrix::from_fn(n, n, |i, j| {
            k[(i, j)] - col_mean[i] - col_mean[j] + all_mean
        });
        let eig = SymmetricEigen::new(centred);
        let top = eig.eigenvalues.max().max(0.0);
        let keep: Vec<usize> = (0..n)
            .filter(|&i| eig.eigenvalues[i] > 1e-9 * top.max(1e-300))
            .collect();
        Self {
            vectors: eig.eigenvectors.select_columns(&keep),
            values: DVector::from_iterator(keep.len(), keep.iter().map(|&i| eig.eigenvalues[i])),
            col_mean,
            all_mean,
        }
    }

    /// Rows of `k_new` (new x train) centred like the training kernel.
    fn centre(&self, k_new: &DMatrix<f64>) -> DMatrix<f64> {
        let row_mean: Vec<f64> = k_new.row_iter().map(|r| r.mean()).collect();
        DMatrix::from_fn(k_new.nrows(), k_new.ncols(), |i, j| {
            k_new[(i, j)] - row_mean[i] - self.col_mean[j] + self.all_mean
        })
    }

    /// Training rows in the eigenbasis: `V Λ^{1/2}`.
    fn train_coords(&self) -> DMatrix<f64> {
        let mut z = self.vectors.clone();
        for (mut col, &l) in z.column_iter_mut().zip(self.values.iter()) {
            col *= l.sqrt();
        }
        z
    }

    /// New rows in the eigenbasis: `K_new V Λ^{-1/2}`.
    fn new_coords(&self, k_new: &DMatrix<f64>) -> DMatrix<f64> {
        let mut z = self.centre(k_new) * &self.vectors;
        for (mut col, &l) in z.column_iter_mut().zip(self.values.iter()) {
            col /= l.sqrt();
        }
        z
    }
}

fn folds(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut mtm_dataloader::streams::decoder_folds(seed));
    let mut fold = vec![0; n];
    for (position, &i) in order.iter().enumerate() {
        fold[i] = position % FOLDS;
    }
    fold
}

fn submatrix(m: &DMatrix<f64>, rows: &[usize], cols: &[usize]) -> DMatrix<f64> {
    DMatrix::from_fn(rows.len(), cols.len(), |i, j| m[(rows[i], cols[j])])
}

/// Ridge predictions for `k_new` (new x train kernel) from targets `y` (train x outputs),
/// one matrix per alpha; the projections every alpha shares are computed once.
fn ridge_predict(
    basis: &Basis,
    k_new: &DMatrix<f64>,
    y: &DMatrix<f64>,
    alphas: &[f64],
) -> Vec<DMatrix<f64>> {
    let y_mean = DVector::from_fn(y.ncols(), |j, _| y.column(j).mean());
    let centred = DMatrix::from_fn(y.nrows(), y.ncols(), |i, j| y[(i, j)] - y_mean[j]);
    let target_coords = basis.vectors.transpose() * centred;
    let new_coords = basis.centre(k_new) * &basis.vectors;
    alphas
        .iter()
        .map(|&alpha| {
            let mut proj = target_coords.clone();
            for (i, mut row) in proj.row_iter_mut().enumerate() {
                row /= basis.values[i] + alpha;
            }
            let mut pred = &new_coords * proj;
            for mut row in pred.row_iter_mut() {
                row += y_mean.transpose();
            }
            pred
        })
        .collect()
}

/// R² over every entry (trials x outputs) against the entries' own mean.
fn r2(y: &DMatrix<f64>, pred: &DMatrix<f64>) -> f64 {
    let mean = y.mean();
    let ss_res: f64 = y
        .iter()
        .zip(pred.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    let ss_tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        0.0
    }
}

/// Whisker motion energy (or any per-bin target) from features: ridge with alpha chosen by
/// 4-fold CV on the fit trials, R² on the test trials. Rows are trials; `*_y` holds
/// `outputs` values per trial.
pub fn ridge_r2(
    fit_x: &[f32],
    fit_y: &[f64],
    test_x: &[f32],
    test_y: &[f64],
    dim: usize,
    outputs: usize,
    seed: u64,
) -> DecodeScore {
    let k = kernels(fit_x, test_x, dim);
    let n = k.fit.nrows();
    let y = DMatrix::from_row_slice(n, outputs, fit_y);
    let y_test = DMatrix::from_row_slice(test_y.len() / outputs, outputs, test_y);
    let fold = folds(n, seed);
    let mut cv = vec![0.0; RIDGE_ALPHA.len()];
    for f in 0..FOLDS {
        let tr: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
        let va: Vec<usize> = (0..n).filter(|&i| fold[i] == f).collect();
        let basis = Basis::new(&submatrix(&k.fit, &tr, &tr));
        let k_va = submatrix(&k.fit, &va, &tr);
        let y_tr = y.select_rows(&tr);
        let y_va = y.select_rows(&va);
        let predictions = ridge_predict(&basis, &k_va, &y_tr, &RIDGE_ALPHA);
        for (score, pred) in cv.iter_mut().zip(&predictions) {
            *score += r2(&y_va, pred) / FOLDS as f64;
        }
    }
    let best = argmax(&cv);
    let basis = Basis::new(&k.fit);
    let pred = ridge_predict(&basis, &k.cross, &y, &[RIDGE_ALPHA[best]]).remove(0);
    DecodeScore {
        missing_trials: 0,
        metric: "r2".into(),
        value: r2(&y_test, &pred),
        chance: 0.0,
        regularisation: RIDGE_ALPHA[best],
        fit_trials: n,
        test_trials: y_test.nrows(),
    }
}

fn argmax(values: &[f64]) -> usize {
    // The first best, so ties go to the strongest regularisation listed first... for ridge
    // alpha = 0 comes first; ties there are exact only when data are degenerate.
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// L2 logistic regression in coordinates `z` (rows) with labels `y`: minimises
/// `C·Σ logloss + ½|w|²` by damped Newton steps, the intercept unpenalised. Starts from
/// `start` (warm start along the C grid).
fn logistic_fit(z: &DMatrix<f64>, y: &[bool], c: f64, start: &DVector<f64>) -> DVector<f64> {
    let (n, r) = (z.nrows(), z.ncols());
    // Design with a trailing column of ones for the intercept.
    let x = DMatrix::from_fn(n, r + 1, |i, j| if j < r { z[(i, j)] } else { 1.0 });
    let objective = |w: &DVector<f64>| {
        let margins = &x * w;
        let loss: f64 = margins
            .iter()
            .zip(y)
            .map(|(&m, &label)| {
                let s = if label { -m } else { m };
                // log(1 + e^s), stable.
                s.max(0.0) + (-s.abs()).exp().ln_1p()
            })
            .sum();
        c * loss + 0.5 * w.rows(0, r).norm_squared()
    };
    let mut w = start.clone();
    let mut current = objective(&w);
    for _ in 0..100 {
        let margins = &x * &w;
        let p: Vec<f64> = margins.iter().map(|&m| sigmoid(m)).collect();
        let residual = DVector::from_fn(n, |i, _| p[i] - f64::from(u8::from(y[i])));
        let mut grad = x.transpose() * residual * c;
        for j in 0..r {
            grad[j] += w[j];
        }
        let weighted = DMatrix::from_fn(n, r + 1, |i, j| x[(i, j)] * c * p[i] * (1.0 - p[i]));
        let mut hessian = x.transpose() * weighted;
        for j in 0..r {
            hessian[(j, j)] += 1.0;
        }
        hessian[(r, r)] += 1e-10;
        let Some(chol) = hessian.cholesky() else {
            break;
        };
        let step = chol.solve(&grad);
        let mut t = 1.0;
        let mut improved = false;
        while t > 1e-8 {
            let candidate = &w - &step * t;
            let value = objective(&candidate);
            if value <= current {
                let gain = current - value;
                w = candidate;
                current = value;
                improved = gain > 1e-10 * current.abs().max(1.0);
                break;
            }
            t *= 0.5;
        }
        if !improved {
            break;
        }
    }
    w
}

fn accuracy(z: &DMatrix<f64>, w: &DVector<f64>, y: &[bool]) -> f64 {
    let r = z.ncols();
    let correct = (0..z.nrows())
        .filter(|&i| {
            let m = (z.row(i) * w.rows(0, r))[(0, 0)] + w[r];
            (m > 0.0) == y[i]
        })
        .count();
    correct as f64 / z.nrows().max(1) as f64
}

/// Choice from features: L2 logistic regression with C chosen by 4-fold CV on the fit
/// trials, accuracy on the test trials, beside the majority class's accuracy.
pub fn logistic_accuracy(
    fit_x: &[f32],
    fit_y: &[bool],
    test_x: &[f32],
    test_y: &[bool],
    dim: usize,
    seed: u64,
) -> DecodeScore {
    let k = kernels(fit_x, test_x, dim);
    let n = k.fit.nrows();
    let fold = folds(n, seed);
    let mut cv = vec![0.0; LOGISTIC_C.len()];
    for f in 0..FOLDS {
        let tr: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
        let va: Vec<usize> = (0..n).filter(|&i| fold[i] == f).collect();
        let basis = Basis::new(&submatrix(&k.fit, &tr, &tr));
        let z_tr = basis.train_coords();
        let z_va = basis.new_coords(&submatrix(&k.fit, &va, &tr));
        let y_tr: Vec<bool> = tr.iter().map(|&i| fit_y[i]).collect();
        let y_va: Vec<bool> = va.iter().map(|&i| fit_y[i]).collect();
        let mut w = DVector::zeros(z_tr.ncols() + 1);
        for (score, &c) in cv.iter_mut().zip(&LOGISTIC_C) {
            w = logistic_fit(&z_tr, &y_tr, c, &w);
            *score += accuracy(&z_va, &w, &y_va) / FOLDS as f64;
        }
    }
    let best = argmax(&cv);
    let basis = Basis::new(&k.fit);
    let z = basis.train_coords();
    let mut w = DVector::zeros(z.ncols() + 1);
    for &c in &LOGISTIC_C[..=best] {
        w = logistic_fit(&z, fit_y, c, &w);
    }
    let z_test = basis.new_coords(&k.cross);
    let ones = fit_y.iter().filter(|&&b| b).count();
    let majority = ones * 2 >= fit_y.len();
    let chance =
        test_y.iter().filter(|&&b| b == majority).count() as f64 / test_y.len().max(1) as f64;
    DecodeScore {
        missing_trials: 0,
        metric: "accuracy".into(),
        value: accuracy(&z_test, &w, test_y),
        chance,
        regularisation: LOGISTIC_C[best],
        fit_trials: n,
        test_trials: test_y.len(),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Trials whose label is the sign of a weighted sum of a few of many features.
    fn linear_data(n: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<bool>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w: Vec<f64> = (0..dim).map(|j| if j < 5 { 1.0 } else { 0.0 }).collect();
        let mut x = Vec::with_capacity(n * dim);
        let (mut labels, mut targets) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let row: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let s: f64 = row.iter().zip(&w).map(|(&a, &b)| f64::from(a) * b).sum();
            labels.push(s > 0.0);
            targets.push(2.0 * s + 0.1 * rng.random_range(-1.0..1.0));
            targets.push(-s);
            x.extend(row);
        }
        (x, labels, targets)
    }

    #[test]
    fn logistic_regression_finds_a_linear_rule_and_beats_chance() {
        let dim = 40;
        let (x, y, _) = linear_data(200, dim, 1);
        let (xt, yt, _) = linear_data(100, dim, 2);
        let score = logistic_accuracy(&x, &y, &xt, &yt, dim, 0);
        assert!(score.value > 0.85, "{score:?}");
        assert!(score.chance < 0.7, "{score:?}");
        assert!(LOGISTIC_C.contains(&score.regularisation));
    }

    #[test]
    fn ridge_recovers_a_linear_map_and_noise_scores_near_zero() {
        let dim = 50;
        let (x, _, y) = linear_data(300, dim, 3);
        let (xt, _, yt) = linear_data(100, dim, 4);
        let score = ridge_r2(&x, &y, &xt, &yt, dim, 2, 0);
        assert!(score.value > 0.9, "{score:?}");
        // Targets unrelated to the features.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let noise: Vec<f64> = y.iter().map(|_| rng.random_range(-1.0..1.0)).collect();
        let noise_t: Vec<f64> = yt.iter().map(|_| rng.random_range(-1.0..1.0)).collect();
        let null = ridge_r2(&x, &noise, &xt, &noise_t, dim, 2, 0);
        assert!(null.value < 0.1, "{null:?}");
    }

    #[test]
    fn kernel_ridge_equals_the_primal_solution() {
        // Fewer features than trials: ridge has a unique primal solution to compare with.
        let dim = 4;
        let (x, _, y) = linear_data(40, dim, 6);
        let (xt, _, _) = linear_data(10, dim, 7);
        let k = kernels(&x, &xt, dim);
        let basis = Basis::new(&k.fit);
        let targets = DMatrix::from_row_slice(40, 2, &y);
        let kernel_pred = ridge_predict(&basis, &k.cross, &targets, &[3.0]).remove(0);
        // Primal: standardised X, centred, w = (XᵀX + αI)⁻¹ Xᵀ(y - ȳ).
        let standardise = |rows: &[f32]| {
            let fit = DMatrix::from_fn(40, dim, |i, j| f64::from(x[i * dim + j]));
            let mean = DVector::from_fn(dim, |j, _| fit.column(j).mean());
            let sd = DVector::from_fn(dim, |j, _| {
                (fit.column(j).map(|v| (v - mean[j]).powi(2)).sum() / 40.0).sqrt()
            });
            let n = rows.len() / dim;
            DMatrix::from_fn(n, dim, |i, j| {
                (f64::from(rows[i * dim + j]) - mean[j]) / sd[j]
            })
        };
        let xs = standardise(&x);
        let xts = standardise(&xt);
        let y_mean = DVector::from_fn(2, |j, _| targets.column(j).mean());
        let yc = DMatrix::from_fn(40, 2, |i, j| targets[(i, j)] - y_mean[j]);
        let xm = DVector::from_fn(dim, |j, _| xs.column(j).mean());
        let xc = DMatrix::from_fn(40, dim, |i, j| xs[(i, j)] - xm[j]);
        let w = (xc.transpose() * &xc + DMatrix::identity(dim, dim) * 3.0)
            .cholesky()
            .unwrap()
            .solve(&(xc.transpose() * yc));
        let xtc = DMatrix::from_fn(10, dim, |i, j| xts[(i, j)] - xm[j]);
        let mut primal = xtc * w;
        for mut row in primal.row_iter_mut() {
            row += y_mean.transpose();
        }
        let diff = (kernel_pred - primal).abs().max();
        assert!(diff < 1e-4, "kernel and primal ridge differ by {diff}");
    }
}
