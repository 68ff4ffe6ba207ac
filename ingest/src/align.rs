//! The rules every source shares, in one place: which trials are kept, the window each is
//! cut to, how spikes are binned, where behaviour is sampled, and which split a trial
//! joins. The ALF and BrainWideBench readers only gather a session's arrays; this module
//! turns them into trial records.

use std::path::Path;

use mtm_dataloader::streams::stream;
use mtm_dataloader::writer::TrialRecord;

use crate::error::{IngestError, Result};
use crate::{BIN, IngestReport, N_BINS, PRE, REACTION_TIME, interp};

/// A behaviour trace: sample times (sorted) and values.
pub(crate) struct Trace {
    pub times: Vec<f64>,
    pub values: Vec<f64>,
}

/// The trials table, one entry per trial, in IBL's conventions.
pub(crate) struct TrialColumns<'a> {
    /// Stimulus onset (s).
    pub stim_on: &'a [f64],
    /// First movement (s).
    pub movement: &'a [f64],
    /// -1 / +1, 0 for no response.
    pub choice: &'a [f64],
    /// Feedback type: 1 for a reward.
    pub feedback: &'a [f64],
    /// Probability of a left stimulus (the block).
    pub block: &'a [f64],
    /// Further event times that must be finite where the source has them (go cue,
    /// feedback time).
    pub also_finite: Vec<&'a [f64]>,
}

/// One probe's spikes: times (sorted), the unit of each, and which units are kept.
pub(crate) struct SpikeTrain<'a> {
    pub times: &'a [f64],
    pub units: &'a [i64],
    /// Unit index → the kept unit's column, or `None` for a unit left out.
    pub keep: &'a [Option<u32>],
}

/// How trials are assigned to train / val / test.
pub(crate) enum SplitRule<'a> {
    /// mtm's 70/10/20 shuffle, seeded from (seed, eid).
    Shuffle { seed: u64, eid: &'a str },
    /// The source's own split: per split, the intervals (start, end) of its domain. A trial
    /// joins the split whose interval holds its whole window; a trial held by none is
    /// dropped and counted. (Only BrainWideBench files carry a split.)
    #[cfg_attr(not(feature = "bwb"), allow(dead_code))]
    Domains(&'a [Vec<(f64, f64)>; 3]),
}

/// FNV-1a, written out because the split seed must not change with the Rust release (std's
/// hashers make no such promise) and a crate for eight lines is not worth a dependency.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Filters, windows, bins and splits a session's trials (`source` names it in errors).
#[allow(clippy::too_many_arguments)] // each argument is one part of a session, named at the call
pub(crate) fn align(
    source: &Path,
    trials: &TrialColumns,
    trains: &[SpikeTrain],
    n_units: usize,
    whisker: Option<&Trace>,
    wheel: Option<&Trace>,
    split: SplitRule,
    report: &mut IngestReport,
) -> Result<[Vec<TrialRecord>; 3]> {
    let window = N_BINS as f64 * BIN;
    report.trials_total = trials.stim_on.len();
    let mut kept = Vec::new();
    for k in 0..trials.stim_on.len() {
        let events = [
            trials.stim_on[k],
            trials.movement[k],
            trials.choice[k],
            trials.feedback[k],
            trials.block[k],
        ];
        let t0 = trials.stim_on[k] - PRE;
        if events
            .iter()
            .chain(trials.also_finite.iter().map(|c| &c[k]))
            .any(|v| v.is_nan())
        {
            report.dropped_nan += 1;
        } else if trials.choice[k] == 0.0 {
            report.dropped_no_choice += 1;
        } else if !(REACTION_TIME.0..=REACTION_TIME.1)
            .contains(&(trials.movement[k] - trials.stim_on[k]))
        {
            report.dropped_reaction_time += 1;
        } else if let SplitRule::Domains(domains) = &split {
            let holds = |d: &Vec<(f64, f64)>| d.iter().any(|&(s, e)| s <= t0 && t0 + window <= e);
            match domains.iter().position(holds) {
                Some(s) => kept.push((k, s)),
                None => report.dropped_split += 1,
            }
        } else {
            kept.push((k, 0));
        }
    }
    if kept.is_empty() {
        return Err(IngestError::NoTrials {
            path: source.to_path_buf(),
            counts: format!(
                "{} trials: {} with NaN events, {} without a choice, {} with reaction time outside [{}, {}] s, {} outside the file's split domains",
                report.trials_total,
                report.dropped_nan,
                report.dropped_no_choice,
                report.dropped_reaction_time,
                REACTION_TIME.0,
                REACTION_TIME.1,
                report.dropped_split
            ),
        });
    }

    let mut dense = vec![0u32; N_BINS * n_units];
    let mut records = Vec::with_capacity(kept.len());
    for &(k, _) in &kept {
        let t0 = trials.stim_on[k] - PRE;
        dense.iter_mut().for_each(|c| *c = 0);
        for train in trains {
            let lo = train.times.partition_point(|&t| t < t0);
            let hi = train.times.partition_point(|&t| t < t0 + window);
            for s in lo..hi {
                let Some(unit) = train.keep[train.units[s] as usize] else {
                    continue;
                };
                let bin = ((train.times[s] - t0) / BIN).floor() as usize;
                if bin < N_BINS {
                    dense[bin * n_units + unit as usize] += 1;
                    report.spikes_binned += 1;
                }
            }
        }
        let (indptr, indices, counts) = TrialRecord::csr_from_dense(&dense, N_BINS, n_units);
        let edges = (1..=N_BINS).map(|b| t0 + b as f64 * BIN);
        let sample = |tr: &Trace| {
            edges
                .clone()
                .map(|x| interp(&tr.times, &tr.values, x))
                .collect::<Vec<_>>()
        };
        records.push(TrialRecord {
            n_bins: N_BINS,
            indptr,
            indices,
            counts,
            choice: trials.choice[k],
            reward: f64::from(trials.feedback[k] == 1.0),
            block: trials.block[k],
            whisker: whisker.map_or_else(|| vec![f64::NAN; N_BINS], sample),
            wheel: wheel.map(sample),
        });
    }

    // Trials stay in time order within a split.
    let assignment: Vec<usize> = match split {
        SplitRule::Shuffle { seed, eid } => {
            mtm_dataloader::session::assign_splits(records.len(), &mut stream(seed, &[fnv1a(eid)]))
                .into_iter()
                .map(|s| s as usize)
                .collect()
        }
        SplitRule::Domains(_) => kept.iter().map(|&(_, s)| s).collect(),
    };
    let mut out: [Vec<TrialRecord>; 3] = Default::default();
    for (record, split) in records.into_iter().zip(assignment) {
        out[split].push(record);
    }
    report.splits = [out[0].len(), out[1].len(), out[2].len()];
    Ok(out)
}
