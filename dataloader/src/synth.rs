//! Synthetic IBL-like sessions: the embedded default dataset.
//!
//! Each session is a probe through 3-8 real Allen regions with hundreds of units. Spikes
//! are Poisson counts from log-rates driven by latent dynamics that the masking schemes
//! can learn:
//! - task latents shared by every region: a stimulus response 0.5 s into the window (signed
//!   by stimulus side, scaled by contrast), a choice-dependent drift that ramps up before
//!   movement, a movement bump, and a block-prior offset;
//! - two smooth region-private latents per region (AR(1), τ = 150 ms), so that units of a
//!   region predict each other beyond what other regions explain.
//!
//! Behaviour comes from the same latents: choice from contrast and block prior, reward from
//! choice and side, whisker motion energy and wheel speed from the movement latent.
//! Everything is a pure function of (seed, session index).

use object_store::ObjectStoreExt;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};
use serde::{Deserialize, Serialize};

use crate::dynamics::{LATENT, System};
use crate::error::{DataError, Result};
use crate::session::assign_splits;
use crate::store::Location;
use crate::streams::stream;
use crate::writer::{SessionInfo, TrialRecord, WriteOptions, write_session};

/// Real Allen CCF acronyms found in IBL repeated-site and Brain Wide Map recordings.
pub const REGION_POOL: [&str; 24] = [
    "CA1", "DG-mo", "DG-sg", "CA3", "LP", "PO", "VISa5", "VISa6a", "VISam5", "LGd-sh", "LGd-co",
    "VPM", "VPLpc", "MOs5", "MOp5", "ACAd5", "SCm", "APN", "MRN", "ZI", "CP", "SSp-bfd4", "RSPv5",
    "root",
];

/// What to generate. In a TOML or JSON file, omitted fields take the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Number of sessions.
    pub sessions: usize,
    /// Seed of every random stream.
    pub seed: u64,
    /// Fewest and most units per session.
    pub units: (usize, usize),
    /// Fewest and most trials per session (before the 70/10/20 split).
    pub trials: (usize, usize),
    /// Fewest and most regions per session.
    pub regions: (usize, usize),
    /// Bins per trial.
    pub n_bins: usize,
    /// Bin width (s).
    pub binsize: f64,
    /// Whether to write the optional `wheel-speed` column.
    pub wheel: bool,
    /// Standard deviation of a per-trial state (engagement, arousal) shared by every unit
    /// of a session, constant within the trial, entering each unit's log-rate through a
    /// positive loading (mean 1, sd 0.3). A model that reads the whole trial can estimate it;
    /// smoothing over 50 ms barely can. 0 (default) leaves it out and the data unchanged.
    pub trial_state: f64,
    /// Where the latent activity comes from: `independent` (default: task latents and
    /// region-private latents drawn per session) or `shared` (one nonlinear dynamical
    /// system of interacting regions that every session records a part of, see
    /// `dynamics.rs`: the benchmark with known transfer between sessions).
    pub dynamics: Dynamics,
    /// The last this many sessions draw their trial count from `data_poor_trials` instead
    /// of `trials` (held-out sessions with little data, where pretraining should help).
    pub data_poor_sessions: usize,
    /// Fewest and most trials of the data-poor sessions (before the 70/10/20 split).
    pub data_poor_trials: (usize, usize),
}

/// Where a synthetic session's latent activity comes from (see [`SynthConfig::dynamics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dynamics {
    /// Task latents and region-private latents drawn per session.
    #[default]
    Independent,
    /// One dynamical system shared by every session; sessions differ in the regions they
    /// record and in their units' readouts.
    Shared,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            sessions: 4,
            seed: 0,
            units: (300, 1000),
            trials: (150, 1000),
            regions: (3, 8),
            n_bins: 100,
            binsize: 0.02,
            wheel: true,
            trial_state: 0.0,
            dynamics: Dynamics::Independent,
            data_poor_sessions: 0,
            data_poor_trials: (30, 60),
        }
    }
}

impl SynthConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(m));
        if self.sessions == 0 {
            return bad("--sessions must be at least 1".into());
        }
        for (name, (lo, hi)) in [
            ("units", self.units),
            ("trials", self.trials),
            ("regions", self.regions),
            ("data_poor_trials", self.data_poor_trials),
        ] {
            if lo == 0 || lo > hi {
                return bad(format!("{name}: need 1 <= min <= max, got {lo}..{hi}"));
            }
        }
        if self.regions.1 > REGION_POOL.len() {
            return bad(format!("at most {} regions", REGION_POOL.len()));
        }
        if self.units.0 < self.regions.1 {
            return bad(format!(
                "each region needs a unit: min units {} < max regions {}",
                self.units.0, self.regions.1
            ));
        }
        if self.trials.0 < 10 || self.data_poor_trials.0 < 10 {
            return bad("at least 10 trials per session, so that every split has some".into());
        }
        if self.data_poor_sessions > self.sessions {
            return bad(format!(
                "data_poor_sessions ({}) exceeds sessions ({})",
                self.data_poor_sessions, self.sessions
            ));
        }
        if !(0.0..=3.0).contains(&self.trial_state) {
            return bad(format!(
                "trial_state must lie in [0, 3], not {}",
                self.trial_state
            ));
        }
        if self.n_bins < 10 || self.binsize.is_nan() || self.binsize <= 0.0 {
            return bad("need at least 10 bins of positive width".into());
        }
        Ok(())
    }
}

/// A generated session: its constants and its trials per split.
pub struct SyntheticSession {
    /// Session constants.
    pub info: SessionInfo,
    /// Trials per split (`[train, val, test]`).
    pub trials: [Vec<TrialRecord>; 3],
}

fn uuid_like(rng: &mut ChaCha8Rng) -> String {
    let v: u128 = rng.random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Inverse-transform Poisson sampling. Written by hand because the rate changes at every
/// (trial, bin, unit): rand_distr's `Poisson` would be rebuilt per draw, and at these rates
/// (mostly < 1 spike per bin) inversion needs one or two iterations.
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    let u: f64 = rng.random();
    let mut p = (-lambda).exp();
    let mut cdf = p;
    let mut k = 0u32;
    while u > cdf && k < 200 {
        k += 1;
        p *= lambda / k as f64;
        cdf += p;
    }
    k
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// IBL-like block priors: 90 unbiased trials, then alternating 0.8/0.2 blocks of 20-100.
fn block_sequence(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let mut blocks = vec![0.5; n.min(90)];
    let mut p = if rng.random::<bool>() { 0.8 } else { 0.2 };
    while blocks.len() < n {
        let len = (20.0 - 60.0 * (1.0 - rng.random::<f64>()).ln()).min(100.0) as usize;
        blocks.extend(std::iter::repeat_n(p, len.min(n - blocks.len())));
        p = 1.0 - p;
    }
    blocks
}

const N_SHARED: usize = 4;
const N_PRIVATE: usize = 2;

/// The file at the root of a generated dataset that records how it was generated, so that
/// evaluation can score the true rates (the ceiling no model can beat on average).
pub const GENERATOR_FILE: &str = "synthetic.json";

/// What [`GENERATOR_FILE`] holds: the generator's settings and the eid of each session index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorRecord {
    /// The settings the dataset was generated with.
    pub config: SynthConfig,
    /// Eid of each generated session, in generation order.
    pub eids: Vec<String>,
}

impl GeneratorRecord {
    /// The true log expected counts of session `eid`, per split (`[train, val, test]`), each
    /// `(trials, bins, units)` row-major in the order the files hold the trials; `None` for
    /// an eid this generator did not make.
    pub fn true_log_rates(&self, eid: &str) -> Option<[Vec<f32>; 3]> {
        let index = self.eids.iter().position(|e| e == eid)?;
        let (session, rates) = generate(&self.config, index, true);
        (session.info.eid == eid).then(|| rates.expect("kept"))
    }
}

/// Generates session `index` of the dataset `config` describes.
pub fn generate_session(config: &SynthConfig, index: usize) -> SyntheticSession {
    generate(config, index, false).0
}

/// Generates a session and, when `keep_rates`, the log expected counts its spikes were drawn
/// from, per split.
fn generate(
    config: &SynthConfig,
    index: usize,
    keep_rates: bool,
) -> (SyntheticSession, Option<[Vec<f32>; 3]>) {
    let rng = &mut stream(config.seed, &[index as u64]);
    let (t_bins, dt) = (config.n_bins, config.binsize);
    let n_units = rng.random_range(config.units.0..=config.units.1);
    let trials = if index + config.data_poor_sessions >= config.sessions {
        config.data_poor_trials
    } else {
        config.trials
    };
    let n_trials = rng.random_range(trials.0..=trials.1);
    let n_regions = rng.random_range(config.regions.0..=config.regions.1.min(n_units));

    let mut pool = REGION_POOL.to_vec();
    pool.shuffle(rng);
    let names: Vec<String> = pool[..n_regions].iter().map(|s| s.to_string()).collect();
    // Units per region: random shares, at least one unit each, in probe (depth) order.
    let shares: Vec<f64> = (0..n_regions).map(|_| 0.5 + rng.random::<f64>()).collect();
    let total: f64 = shares.iter().sum();
    let mut region_of = Vec::with_capacity(n_units);
    for (r, share) in shares.iter().enumerate() {
        let take = if r + 1 == n_regions {
            n_units - region_of.len()
        } else {
            ((share / total * n_units as f64) as usize)
                .max(1)
                .min(n_units - region_of.len() - (n_regions - r - 1))
        };
        region_of.extend(std::iter::repeat_n(r, take));
    }

    // Unit parameters.
    let base_rate = LogNormal::new(4.0f64.ln(), 0.8).expect("valid");
    let loading = Normal::new(0.0, 1.0).expect("valid");
    let profile: Vec<[f64; N_SHARED]> = (0..n_regions)
        .map(|_| std::array::from_fn(|_| rng.random_range(0.3..1.5)))
        .collect();
    let log_base: Vec<f64> = (0..n_units)
        .map(|_| (base_rate.sample(rng).clamp(0.3, 60.0) * dt).ln())
        .collect();
    let w_shared: Vec<[f64; N_SHARED]> = region_of
        .iter()
        .map(|&r| std::array::from_fn(|k| 0.35 * loading.sample(rng) * profile[r][k]))
        .collect();
    let w_private: Vec<[f64; N_PRIVATE]> = (0..n_units)
        .map(|_| std::array::from_fn(|_| 0.5 * loading.sample(rng)))
        .collect();

    // The per-trial state comes from its own stream, so that data generated without it
    // (trial_state = 0) stays what it always was.
    let state_rng = &mut stream(config.seed, &[index as u64, 0x7374_6174]);
    let state_loading: Vec<f64> = if config.trial_state > 0.0 {
        (0..n_units)
            .map(|_| (1.0 + 0.3 * loading.sample(state_rng)).max(0.0))
            .collect()
    } else {
        vec![0.0; n_units]
    };

    // Under shared dynamics: the system, each region's place in it, and each unit's
    // readout of its region's state, from streams of their own (the main stream's draws
    // stay those of independent data).
    let shared_system = (config.dynamics == Dynamics::Shared).then(|| {
        let readout_rng = &mut stream(config.seed, &[index as u64, 0x7265_6164]);
        let pool_index: Vec<usize> = names
            .iter()
            .map(|n| {
                REGION_POOL
                    .iter()
                    .position(|p| p == n)
                    .expect("names come from the pool")
            })
            .collect();
        let readout: Vec<[f64; LATENT]> = (0..n_units)
            .map(|_| std::array::from_fn(|_| 0.6 * loading.sample(readout_rng)))
            .collect();
        (System::new(config.seed), pool_index, readout)
    });

    // Session constants.
    let eid = uuid_like(rng);
    let mut depths = Vec::with_capacity(n_units);
    let mut depth = 200.0;
    for _ in 0..n_units {
        depth += rng.random_range(0.0..(3600.0 / n_units as f64) * 2.0);
        depths.push(depth.round());
    }
    let info = SessionInfo {
        eid: eid.clone(),
        probe_name: "probe00".into(),
        subject: format!("SYN-{index:03}"),
        lab: format!("synthetic-lab-{}", index % 5),
        sampling_freq: 30_000.0,
        binsize: dt,
        interval_len: (t_bins as f64 * dt).round() as i64,
        regions: region_of.iter().map(|&r| names[r].clone()).collect(),
        channels: depths.iter().map(|d| (d / 10.0) as i64).collect(),
        good: (0..n_units)
            .map(|_| i64::from(rng.random_bool(0.7)))
            .collect(),
        uuids: (0..n_units).map(|_| uuid_like(rng)).collect(),
        depths,
        metadata: Vec::new(),
    };

    // Trials.
    let blocks = block_sequence(rng, n_trials);
    let contrasts = [1.0, 0.25, 0.125, 0.0625, 0.0];
    let phi = (-dt / 0.15f64).exp();
    let innovation = (1.0 - phi * phi).sqrt();
    let stim_time = 0.5; // stimulus onset, seconds into the window
    let mut records = Vec::with_capacity(n_trials);
    let mut shared = vec![[0.0f64; N_SHARED]; t_bins];
    let mut private = vec![[0.0f64; N_PRIVATE]; t_bins * n_regions];
    let mut dense = vec![0u32; t_bins * n_units];
    let mut rates: Vec<Vec<f32>> = Vec::new();
    let cap = 8.0f64.ln();
    for (trial, &block) in blocks.iter().enumerate() {
        let side = if rng.random::<f64>() < block {
            -1.0
        } else {
            1.0
        }; // -1 = left
        let contrast = contrasts[rng.random_range(0..contrasts.len())];
        let signed = side * contrast;
        let p_right = sigmoid(6.0 * signed - 2.5 * (block - 0.5));
        let choice = if rng.random::<f64>() < p_right {
            1.0
        } else {
            -1.0
        };
        let reward = f64::from(choice == side);
        let rt = (0.08
            + LogNormal::new(0.22f64.ln(), 0.5)
                .expect("valid")
                .sample(rng))
        .min(1.2);
        let block_offset = 2.0 * (block - 0.5);
        let trial_state = if config.trial_state > 0.0 {
            config.trial_state * loading.sample(state_rng)
        } else {
            0.0
        };
        let mut slow = 0.0;
        for (t, z) in shared.iter_mut().enumerate() {
            let time = (t as f64 + 0.5) * dt - stim_time; // relative to stimulus onset
            let x = (time - 0.04) / 0.08;
            let stim = if x > 0.0 { x * (1.0 - x).exp() } else { 0.0 };
            let ramp =
                sigmoid((time - (rt - 0.12)) / 0.05) * (-(time - rt - 0.4).max(0.0) / 0.5).exp();
            let movement = (-0.5 * ((time - rt - 0.1) / 0.12).powi(2)).exp();
            slow = phi * slow + innovation * rng.random_range(-1.0..1.0);
            *z = [
                side * contrast.sqrt() * 2.0 * stim,
                choice * 1.5 * ramp,
                1.5 * movement - 0.3,
                block_offset + 0.3 * slow,
            ];
        }
        for r in 0..n_regions {
            let mut state = [0.0f64; N_PRIVATE];
            for t in 0..t_bins {
                for s in &mut state {
                    *s = phi * *s + innovation * 1.7 * rng.random_range(-1.0..1.0);
                }
                private[t * n_regions + r] = state;
            }
        }
        let latent = shared_system.as_ref().map(|(system, _, _)| {
            let drive: Vec<[f64; LATENT]> = shared.iter().map(|z| [z[0], z[1], z[2]]).collect();
            let noise = &mut stream(config.seed, &[index as u64, trial as u64, 0x6479_6e61]);
            system.simulate(&drive, dt, noise)
        });
        let pool = REGION_POOL.len();
        let mut trial_rates = if keep_rates {
            vec![0.0f32; t_bins * n_units]
        } else {
            Vec::new()
        };
        for t in 0..t_bins {
            let z = &shared[t];
            for n in 0..n_units {
                let p = &private[t * n_regions + region_of[n]];
                let ws = &w_shared[n];
                let wp = &w_private[n];
                // The independent sum keeps its original order of additions, so that data
                // generated before shared dynamics existed comes out bit for bit the same.
                let log_rate = match (&shared_system, &latent) {
                    (Some((_, pool_index, readout)), Some(x)) => {
                        let state = &x[t * pool + pool_index[region_of[n]]];
                        log_base[n]
                            + readout[n]
                                .iter()
                                .zip(state)
                                .map(|(w, v)| w * v)
                                .sum::<f64>()
                            + ws[3] * z[3]
                            + state_loading[n] * trial_state
                    }
                    _ => {
                        log_base[n]
                            + ws[0] * z[0]
                            + ws[1] * z[1]
                            + ws[2] * z[2]
                            + ws[3] * z[3]
                            + wp[0] * p[0]
                            + wp[1] * p[1]
                            + state_loading[n] * trial_state
                    }
                };
                dense[t * n_units + n] = poisson(rng, log_rate.exp().min(8.0));
                if keep_rates {
                    trial_rates[t * n_units + n] = log_rate.min(cap) as f32;
                }
            }
        }
        rates.push(trial_rates);
        let (indptr, indices, counts) = TrialRecord::csr_from_dense(&dense, t_bins, n_units);
        let whisker = shared
            .iter()
            .map(|z| (0.4 + 0.8 * z[2] + 0.1 * rng.random::<f64>()).max(0.0))
            .collect();
        let wheel = config.wheel.then(|| {
            shared
                .iter()
                .map(|z| choice * 4.0 * (z[2] + 0.3).max(0.0) + 0.05 * rng.random_range(-1.0..1.0))
                .collect()
        });
        records.push(TrialRecord {
            n_bins: t_bins,
            indptr,
            indices,
            counts,
            choice,
            reward,
            block,
            whisker,
            wheel,
        });
    }

    // 70/10/20 split with a seeded shuffle; trials keep their order within a split.
    let assignment = assign_splits(n_trials, rng);
    let mut trials: [Vec<TrialRecord>; 3] = Default::default();
    let mut split_rates: [Vec<f32>; 3] = Default::default();
    for ((record, split), r) in records.into_iter().zip(assignment).zip(rates) {
        trials[split as usize].push(record);
        split_rates[split as usize].extend(r);
    }
    (
        SyntheticSession { info, trials },
        keep_rates.then_some(split_rates),
    )
}

/// [`write_dataset`] into a local folder that appears only when complete: the sessions are
/// written into `{path}.partial` (a leftover from an interrupted run is cleared first),
/// which is renamed to `path` at the end. An interrupted generation (Ctrl-C, a crash) so
/// never leaves a folder that looks like a whole dataset. `path` must not exist.
pub fn write_local_dataset(
    path: &std::path::Path,
    config: &SynthConfig,
    options: WriteOptions,
    progress: impl FnMut(usize, &SyntheticSession),
) -> Result<Vec<String>> {
    let io = |source: std::io::Error, what: &std::path::Path| DataError::Write {
        url: what.display().to_string(),
        reason: source.to_string(),
    };
    if path.exists() {
        return Err(DataError::Config(format!(
            "{} exists; choose a new folder",
            path.display()
        )));
    }
    let mut staging = path.as_os_str().to_owned();
    staging.push(".partial");
    let staging = std::path::PathBuf::from(staging);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(e, &staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| io(e, &staging))?;
    let url = staging
        .to_str()
        .ok_or_else(|| DataError::Config(format!("{} is not valid UTF-8", staging.display())))?;
    let eids = write_dataset(url, config, options, progress)?;
    std::fs::rename(&staging, path).map_err(|e| io(e, path))?;
    Ok(eids)
}

/// Generates and writes every session of `config` under `url`; `progress(i)` is called after
/// session `i` is written. Returns the eids in generation order.
pub fn write_dataset(
    url: &str,
    config: &SynthConfig,
    options: WriteOptions,
    mut progress: impl FnMut(usize, &SyntheticSession),
) -> Result<Vec<String>> {
    config.validate()?;
    let root = Location::parse(url)?;
    let runtime = crate::dataset::build_runtime(1)?;
    let mut eids = Vec::with_capacity(config.sessions);
    for index in 0..config.sessions {
        let session = generate_session(config, index);
        runtime.block_on(write_session(
            &root,
            &session.info,
            &session.trials,
            options,
        ))?;
        eids.push(session.info.eid.clone());
        progress(index, &session);
    }
    let record = GeneratorRecord {
        config: config.clone(),
        eids: eids.clone(),
    };
    let json = serde_json::to_vec_pretty(&record).expect("plain data serializes");
    let target = root.join(GENERATOR_FILE);
    runtime
        .block_on(target.store.put(&target.path, json.into()))
        .map_err(|e| DataError::Store {
            url: target.url(),
            source: e,
        })?;
    Ok(eids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            sessions: 2,
            seed: 5,
            units: (40, 60),
            trials: (30, 40),
            regions: (3, 5),
            ..SynthConfig::default()
        }
    }

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let a = generate_session(&small(), 1);
        let b = generate_session(&small(), 1);
        assert_eq!(a.info, b.info);
        assert_eq!(a.trials, b.trials);
        let other = generate_session(&SynthConfig { seed: 6, ..small() }, 1);
        assert_ne!(a.info.eid, other.info.eid);
    }

    #[test]
    fn sessions_have_the_documented_structure() {
        let s = generate_session(&small(), 0);
        let n = s.info.regions.len();
        assert!((40..=60).contains(&n));
        let mut distinct = s.info.regions.clone();
        distinct.dedup();
        assert!((3..=5).contains(&distinct.len()), "{distinct:?}");
        assert!(distinct.iter().all(|r| REGION_POOL.contains(&r.as_str())));
        let total: usize = s.trials.iter().map(Vec::len).sum();
        assert!((30..=40).contains(&total));
        assert_eq!(s.trials[0].len(), total * 7 / 10);
        assert_eq!(s.trials[1].len(), total / 10);
        for t in s.trials.iter().flatten() {
            assert_eq!(t.indptr.len(), 101);
            assert_eq!(*t.indptr.last().unwrap() as usize, t.counts.len());
            assert!(t.indices.iter().all(|&u| (0..n as i64).contains(&u)));
            assert!(t.counts.iter().all(|&c| c > 0));
            assert!(t.choice == 1.0 || t.choice == -1.0);
            assert_eq!(t.whisker.len(), 100);
        }
    }

    #[test]
    fn rates_are_in_the_range_of_ibl_recordings() {
        let s = generate_session(&small(), 0);
        let n = s.info.regions.len() as f64;
        let trials: Vec<&TrialRecord> = s.trials.iter().flatten().collect();
        let spikes: i64 = trials.iter().map(|t| t.counts.iter().sum::<i64>()).sum();
        let rate = spikes as f64 / (trials.len() as f64 * n * 2.0);
        assert!((1.0..30.0).contains(&rate), "mean rate {rate} Hz");
    }

    #[test]
    fn shared_dynamics_and_data_poor_sessions_are_as_documented() {
        let config = SynthConfig {
            sessions: 3,
            seed: 5,
            units: (30, 40),
            trials: (100, 120),
            regions: (3, 4),
            dynamics: Dynamics::Shared,
            data_poor_sessions: 1,
            data_poor_trials: (20, 25),
            ..SynthConfig::default()
        };
        config.validate().unwrap();
        let trials = |s: &SyntheticSession| s.trials.iter().map(Vec::len).sum::<usize>();
        let sessions: Vec<SyntheticSession> =
            (0..3).map(|i| generate_session(&config, i)).collect();
        assert!((100..=120).contains(&trials(&sessions[0])));
        assert!((100..=120).contains(&trials(&sessions[1])));
        assert!((20..=25).contains(&trials(&sessions[2])));
        // The same seed gives the same data; independent dynamics give other counts.
        let again = generate_session(&config, 1);
        assert_eq!(again.trials[0], sessions[1].trials[0]);
        let independent = generate_session(
            &SynthConfig {
                dynamics: Dynamics::Independent,
                ..config.clone()
            },
            1,
        );
        assert_eq!(independent.info.eid, sessions[1].info.eid);
        assert_ne!(independent.trials[0], sessions[1].trials[0]);
        // Rates stay in the range of recordings: 0.1-40 Hz means per unit.
        let session = &sessions[0];
        let n = session.info.regions.len();
        let mut counts = vec![0u64; n];
        let mut bins = 0u64;
        for t in &session.trials[0] {
            bins += t.n_bins as u64;
            for (i, &c) in t.indices.iter().zip(&t.counts) {
                counts[*i as usize] += c as u64;
            }
        }
        let mean_hz = counts.iter().sum::<u64>() as f64 / (n as f64 * bins as f64 * 0.02);
        assert!((0.5..40.0).contains(&mean_hz), "mean rate {mean_hz} Hz");
        let bad = SynthConfig {
            data_poor_sessions: 4,
            ..config
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("data_poor_sessions")
        );
    }

    #[test]
    fn choice_follows_the_stimulus() {
        let s = generate_session(
            &SynthConfig {
                trials: (400, 400),
                ..small()
            },
            0,
        );
        let trials: Vec<&TrialRecord> = s.trials.iter().flatten().collect();
        let correct = trials.iter().filter(|t| t.reward == 1.0).count() as f64;
        assert!(
            correct / trials.len() as f64 > 0.6,
            "accuracy {}",
            correct / trials.len() as f64
        );
    }
}
