//! The latent dynamical system every session shares under `dynamics = "shared"` (see
//! [`crate::synth::Dynamics`]): the benchmark where pretraining on more animals should help
//! a new one, because every animal runs the same system and only the readout differs.
//!
//! Each region of the pool ([`crate::synth::REGION_POOL`]) has a 3-dimensional latent
//! state. Per bin of `dt`, with `a = dt / 100 ms`:
//!
//! `x_r(t) = (1 - a) x_r(t-1) + a * 2 tanh(J_r x_r(t-1) + sum_s M_rs x_s(t - lag_rs) + B_r u(t) + c_r) + noise`
//!
//! `J_r` (spectral radius about 1.5) makes each region's dynamics nonlinear; each region
//! hears two others through `M_rs` with lags of 40-120 ms, so that one region's past
//! predicts another's present beyond the task; `u(t)` is the trial's task drive (stimulus,
//! choice ramp, movement); every trial starts from its own random state and draws its own
//! noise (0.15 per bin). The system's parameters are a pure function of the dataset's
//! seed alone, never of the session: sessions differ only in which regions they record,
//! how many units, and each unit's random readout of its region's state.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::streams::stream;
use crate::synth::REGION_POOL;

/// Dimensions of each region's latent state.
pub(crate) const LATENT: usize = 3;

type Matrix = [[f64; LATENT]; LATENT];

fn matrix(rng: &mut ChaCha8Rng, sd: f64) -> Matrix {
    let normal = Normal::new(0.0, sd).expect("valid");
    std::array::from_fn(|_| std::array::from_fn(|_| normal.sample(rng)))
}

fn apply(m: &Matrix, x: &[f64; LATENT], out: &mut [f64; LATENT]) {
    for (o, row) in out.iter_mut().zip(m) {
        *o += row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
    }
}

/// One input to region `to`: region `from`'s state `lag` bins earlier, through `weights`.
struct Link {
    from: usize,
    lag: usize,
    weights: Matrix,
}

/// The shared system: one block per pool region.
pub(crate) struct System {
    recurrent: Vec<Matrix>,
    inputs: Vec<Vec<Link>>,
    drive: Vec<Matrix>,
    bias: Vec<[f64; LATENT]>,
}

impl System {
    /// The system of the dataset with seed `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let rng = &mut stream(seed, &[0x5359_5354]);
        let k = REGION_POOL.len();
        // Entries of sd 1.5 / sqrt(3): a spectral radius about 1.5.
        let recurrent = (0..k)
            .map(|_| matrix(rng, 1.5 / (LATENT as f64).sqrt()))
            .collect();
        let inputs = (0..k)
            .map(|to| {
                (0..2)
                    .map(|_| {
                        let mut from = rng.random_range(0..k - 1);
                        if from >= to {
                            from += 1;
                        }
                        Link {
                            from,
                            lag: rng.random_range(2..=6),
                            weights: matrix(rng, 0.8 / (LATENT as f64).sqrt()),
                        }
                    })
                    .collect()
            })
            .collect();
        let drive = (0..k).map(|_| matrix(rng, 1.0)).collect();
        let bias = (0..k)
            .map(|_| std::array::from_fn(|_| rng.random_range(-0.3..0.3)))
            .collect();
        Self {
            recurrent,
            inputs,
            drive,
            bias,
        }
    }

    /// One trial: every pool region's state in every bin, `(T, regions)` row-major, driven
    /// by `drive[t]` (stimulus, choice ramp, movement); the initial state and the noise
    /// come from `rng`.
    pub(crate) fn simulate(
        &self,
        drive: &[[f64; LATENT]],
        dt: f64,
        rng: &mut ChaCha8Rng,
    ) -> Vec<[f64; LATENT]> {
        let k = self.recurrent.len();
        let a = dt / 0.1;
        let normal = Normal::new(0.0, 1.0).expect("valid");
        let mut x: Vec<[f64; LATENT]> = Vec::with_capacity(drive.len() * k);
        let initial: Vec<[f64; LATENT]> = (0..k)
            .map(|_| std::array::from_fn(|_| normal.sample(rng)))
            .collect();
        for (t, u) in drive.iter().enumerate() {
            for r in 0..k {
                let prev = if t == 0 {
                    initial[r]
                } else {
                    x[(t - 1) * k + r]
                };
                let mut field = self.bias[r];
                apply(&self.recurrent[r], &prev, &mut field);
                apply(&self.drive[r], u, &mut field);
                for link in &self.inputs[r] {
                    let source = if t >= link.lag {
                        x[(t - link.lag) * k + link.from]
                    } else {
                        initial[link.from]
                    };
                    apply(&link.weights, &source, &mut field);
                }
                x.push(std::array::from_fn(|d| {
                    (1.0 - a) * prev[d] + a * 2.0 * field[d].tanh() + 0.15 * normal.sample(rng)
                }));
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_depends_on_the_seed_alone_and_trials_vary() {
        let drive = vec![[0.0; LATENT]; 50];
        let simulate = |seed: u64, trial: u64| {
            System::new(seed).simulate(&drive, 0.02, &mut stream(seed, &[trial]))
        };
        assert_eq!(simulate(1, 0), simulate(1, 0));
        assert_ne!(simulate(1, 0), simulate(1, 1));
        assert_ne!(simulate(1, 0), simulate(2, 0));
        let x = simulate(1, 0);
        assert!(x.iter().flatten().all(|v| v.is_finite() && v.abs() < 10.0));
    }
}
