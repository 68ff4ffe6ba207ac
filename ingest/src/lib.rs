//! `mtm ingest`: builds datasets in the published MtM layout (spec §1.1) from raw IBL
//! recordings as the ONE API caches them (ALF files, spec §1.2).
//!
//! Per session: every probe's spikes and clusters are read and merged (probe by probe, in
//! name order); each unit gets the Allen acronym of its peak channel (optionally coarsened
//! to Beryl or Cosmos); trials are filtered (no NaN event time, choice ≠ 0, reaction time
//! in [0.08, 2.0] s), aligned to stimulus onset (-0.5 s to +1.5 s) and binned into 100 bins
//! of 20 ms, a spike at t counting in the bin [t0, t0 + 0.02) that holds it; behaviour
//! traces are interpolated linearly at the right edge of each bin (held constant beyond
//! the trace's ends, like `numpy.interp`); trials are split 70/10/20 by a shuffle seeded
//! from (seed, eid); the three splits are written with the dataset layer's writer.
//!
//! `wheel-speed` is the magnitude of the wheel's angular velocity, |d position / dt| in
//! rad/s with `numpy.gradient` semantics (the published files leave the sign convention
//! undocumented); `whisker-motion-energy` is the left camera's ROI motion energy (the
//! right camera's when the left is absent). `sampling_freq` is written as 30 kHz, since
//! ALF files do not carry it.

pub mod alf;
mod align;
#[cfg(feature = "bwb")]
pub mod bwb;
pub mod error;
pub mod regions;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mtm_dataloader::Location;
use mtm_dataloader::writer::{SessionInfo, TrialRecord, WriteOptions, write_session};
use serde::Serialize;

use align::{SpikeTrain, SplitRule, Trace, TrialColumns};

pub use error::{IngestError, Result};
pub use regions::RegionLevel;

/// Bins per trial.
pub const N_BINS: usize = 100;
/// Bin width (s).
pub const BIN: f64 = 0.02;
/// Window start relative to stimulus onset (s).
pub const PRE: f64 = 0.5;
/// Reaction times kept (s), inclusive.
pub const REACTION_TIME: (f64, f64) = (0.08, 2.0);

/// How to convert.
#[derive(Clone, Debug, Serialize)]
pub struct IngestOptions {
    /// Region labels: Allen acronyms, or the Beryl / Cosmos coarsening.
    pub region_level: RegionLevel,
    /// Keep only units that pass IBL QC (`clusters.metrics.pqt` label == 1).
    pub good_only: bool,
    /// Keep only units firing at least this often over the recording (Hz).
    pub min_rate_hz: Option<f64>,
    /// Seed of the train/val/test shuffle (combined with the eid).
    pub seed: u64,
    /// Trials per Parquet row group.
    pub rows_per_group: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            region_level: RegionLevel::Allen,
            good_only: false,
            min_rate_hz: None,
            seed: 0,
            rows_per_group: 64,
        }
    }
}

/// What one session's conversion did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    /// Session id.
    pub eid: String,
    /// What was read: the ALF session folder, or the BrainWideBench file.
    pub source: PathBuf,
    /// Probes merged, in order.
    pub probes: Vec<String>,
    /// Units in the recording, and kept after the QC / rate filters.
    pub units: (usize, usize),
    /// Trials in the trials table.
    pub trials_total: usize,
    /// Trials dropped for a NaN event time, choice, feedback or block value.
    pub dropped_nan: usize,
    /// Trials dropped for choice == 0 (no response).
    pub dropped_no_choice: usize,
    /// Trials dropped for a reaction time outside [0.08, 2.0] s.
    pub dropped_reaction_time: usize,
    /// Trials dropped because no split domain of the file holds their whole window
    /// (BrainWideBench files, which carry their own split).
    pub dropped_split: usize,
    /// Trials written per split (train, val, test).
    pub splits: [usize; 3],
    /// Spikes read from the recording.
    pub spikes_read: usize,
    /// Spikes that fell in a kept unit's trial window.
    pub spikes_binned: usize,
    /// Behaviour traces absent from the session (written as NaN or left out).
    pub missing: Vec<String>,
    /// Seconds spent reading and binning (writing excluded).
    pub convert_seconds: f64,
}

/// A session to convert: its folder and, when known, its eid.
#[derive(Clone, Debug)]
pub struct SessionArg {
    /// Session id; `None` to derive it from the folder.
    pub eid: Option<String>,
    /// The ALF session folder (holding `alf/`).
    pub folder: PathBuf,
}

impl std::str::FromStr for SessionArg {
    type Err = String;
    /// `PATH` or `EID=PATH`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('=') {
            Some((eid, path)) if !eid.contains('/') => Ok(Self {
                eid: Some(eid.to_string()),
                folder: PathBuf::from(path),
            }),
            _ => Ok(Self {
                eid: None,
                folder: PathBuf::from(s),
            }),
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The ONE cache path `…/{lab}/Subjects/{subject}/{date}/{number}`, when it is one.
fn one_path_parts(folder: &Path) -> Option<(String, String, String, String)> {
    let parts: Vec<String> = folder
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let n = parts.len();
    (n >= 5 && parts[n - 4] == "Subjects").then(|| {
        (
            parts[n - 5].clone(),
            parts[n - 3].clone(),
            parts[n - 2].clone(),
            parts[n - 1].clone(),
        )
    })
}

/// The eid of a session: given, or the folder's name when it is a UUID, or
/// `{subject}_{date}_{number}` from a ONE cache path.
pub fn resolve_eid(arg: &SessionArg) -> Result<String> {
    if let Some(eid) = &arg.eid {
        return Ok(eid.clone());
    }
    let name = arg
        .folder
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if is_uuid(&name) {
        return Ok(name);
    }
    if let Some((_, subject, date, number)) = one_path_parts(&arg.folder) {
        return Ok(format!("{subject}_{date}_{number}"));
    }
    Err(IngestError::Identity {
        path: arg.folder.clone(),
        reason: "cannot tell the session's eid: name the folder by its eid, use a ONE cache path \
                 (…/lab/Subjects/subject/date/number), or pass EID=PATH"
            .into(),
    })
}

/// `numpy.interp`: linear interpolation at `x` of the trace (`ts`, `vs`), constant beyond
/// its ends.
pub fn interp(ts: &[f64], vs: &[f64], x: f64) -> f64 {
    if ts.is_empty() {
        return f64::NAN;
    }
    let i = ts.partition_point(|&t| t <= x);
    if i == 0 {
        return vs[0];
    }
    if i == ts.len() {
        return vs[ts.len() - 1];
    }
    let (t0, t1) = (ts[i - 1], ts[i]);
    if t1 == t0 {
        return vs[i];
    }
    vs[i - 1] + (vs[i] - vs[i - 1]) * (x - t0) / (t1 - t0)
}

/// `numpy.gradient(vs, ts)`: second-order central differences inside, one-sided at the ends.
pub fn gradient(ts: &[f64], vs: &[f64]) -> Vec<f64> {
    let n = ts.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mut g = vec![0.0; n];
    g[0] = (vs[1] - vs[0]) / (ts[1] - ts[0]);
    g[n - 1] = (vs[n - 1] - vs[n - 2]) / (ts[n - 1] - ts[n - 2]);
    for i in 1..n - 1 {
        let (h0, h1) = (ts[i] - ts[i - 1], ts[i + 1] - ts[i]);
        g[i] = (h0 * h0 * vs[i + 1] - h1 * h1 * vs[i - 1] + (h1 * h1 - h0 * h0) * vs[i])
            / (h0 * h1 * (h0 + h1));
    }
    g
}

pub(crate) fn check_sorted(path: &Path, what: &str, ts: &[f64]) -> Result<()> {
    // NaN compares as neither: it counts as out of order.
    if let Some(i) = ts
        .windows(2)
        .position(|w| w[0].partial_cmp(&w[1]).is_none_or(|o| o.is_gt()))
    {
        return Err(IngestError::Read {
            path: path.to_path_buf(),
            reason: format!(
                "{what} out of order at index {}: {} then {}",
                i + 1,
                ts[i],
                ts[i + 1]
            ),
        });
    }
    Ok(())
}

pub(crate) fn same_length(path: &Path, what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(IngestError::Mismatch {
            path: path.to_path_buf(),
            what: format!("{what}: {a} vs {b}"),
        });
    }
    Ok(())
}

fn read_trace(alf: &Path, times_file: &str, values_file: &str) -> Result<Option<Trace>> {
    let (tp, vp) = (alf.join(times_file), alf.join(values_file));
    if !tp.exists() && !vp.exists() {
        return Ok(None);
    }
    let (times, values) = (alf::f64s(&tp)?, alf::f64s(&vp)?);
    same_length(
        &vp,
        &format!("{values_file} and {times_file} lengths differ"),
        values.len(),
        times.len(),
    )?;
    check_sorted(&tp, "timestamps", &times)?;
    Ok(Some(Trace { times, values }))
}

struct Probe {
    name: String,
    folder: PathBuf,
    times: Vec<f64>,
    clusters: Vec<i64>,
    /// Peak channel per cluster (`clusters.channels.npy`); its length is the cluster count.
    channels: Vec<i64>,
}

struct Units {
    regions: Vec<String>,
    channels: Vec<i64>,
    depths: Vec<f64>,
    good: Vec<i64>,
    uuids: Vec<String>,
    /// Per probe: cluster index → kept unit index.
    keep: Vec<Vec<Option<u32>>>,
}

fn read_probe(name: &str, folder: &Path) -> Result<Probe> {
    let times_path = folder.join("spikes.times.npy");
    let times = alf::f64s(&times_path)?;
    let clusters = alf::i64s(&folder.join("spikes.clusters.npy"))?;
    same_length(
        &folder.join("spikes.clusters.npy"),
        "spikes.clusters and spikes.times lengths differ",
        clusters.len(),
        times.len(),
    )?;
    check_sorted(&times_path, "spike times", &times)?;
    let channels = alf::i64s(&folder.join("clusters.channels.npy"))?;
    let n_clusters = channels.len();
    if let Some(&bad) = clusters
        .iter()
        .find(|&&c| c < 0 || c as usize >= n_clusters)
    {
        return Err(IngestError::Mismatch {
            path: folder.join("spikes.clusters.npy"),
            what: format!(
                "cluster {bad} is outside the {n_clusters} clusters of clusters.channels.npy"
            ),
        });
    }
    Ok(Probe {
        name: name.to_string(),
        folder: folder.to_path_buf(),
        times,
        clusters,
        channels,
    })
}

fn read_units(
    probes: &[Probe],
    options: &IngestOptions,
    report: &mut IngestReport,
) -> Result<Units> {
    let mut units = Units {
        regions: Vec::new(),
        channels: Vec::new(),
        depths: Vec::new(),
        good: Vec::new(),
        uuids: Vec::new(),
        keep: Vec::new(),
    };
    for probe in probes {
        let f = &probe.folder;
        let channels = &probe.channels;
        let depths = alf::f64s(&f.join("clusters.depths.npy"))?;
        same_length(
            &f.join("clusters.depths.npy"),
            "clusters.depths and clusters.channels lengths differ",
            depths.len(),
            channels.len(),
        )?;
        let uuids = alf::csv_column(&f.join("clusters.uuids.csv"), "uuids")?;
        same_length(
            &f.join("clusters.uuids.csv"),
            "clusters.uuids rows and clusters.channels lengths differ",
            uuids.len(),
            channels.len(),
        )?;
        let locations_path = f.join("channels.brainLocationIds_ccf_2017.npy");
        let locations = alf::i64s(&locations_path)?;
        let metrics_path = f.join("clusters.metrics.pqt");
        let good: Vec<i64> = if metrics_path.exists() {
            let cols = alf::parquet_columns(&metrics_path, &["label", "cluster_id"])?;
            let label = cols[0].clone().ok_or_else(|| IngestError::Read {
                path: metrics_path.clone(),
                reason: "no column `label`".into(),
            })?;
            let mut good = vec![0i64; channels.len()];
            for (row, l) in label.iter().enumerate() {
                let cluster = cols[1].as_ref().map_or(row, |ids| ids[row] as usize);
                if cluster < good.len() && *l == 1.0 {
                    good[cluster] = 1;
                }
            }
            good
        } else if options.good_only {
            return Err(IngestError::MissingFile { path: metrics_path });
        } else {
            report.missing.push(format!(
                "{}: clusters.metrics.pqt (good_clusters written as 0)",
                probe.name
            ));
            vec![0; channels.len()]
        };
        let duration = match (probe.times.first(), probe.times.last()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => 1.0,
        };
        let mut counts = vec![0usize; probe.channels.len()];
        for &c in &probe.clusters {
            counts[c as usize] += 1;
        }
        let mut keep = vec![None; probe.channels.len()];
        for c in 0..probe.channels.len() {
            report.units.0 += 1;
            let rate = counts[c] as f64 / duration;
            if (options.good_only && good[c] != 1) || options.min_rate_hz.is_some_and(|m| rate < m)
            {
                continue;
            }
            let channel = channels[c];
            let id = usize::try_from(channel).ok().and_then(|ch| locations.get(ch)).ok_or_else(|| {
                IngestError::Mismatch {
                    path: locations_path.clone(),
                    what: format!("cluster {c} sits on channel {channel}, but only {} channels have a location", locations.len()),
                }
            })?;
            let region =
                regions::acronym(*id, options.region_level).ok_or_else(|| IngestError::Read {
                    path: locations_path.clone(),
                    reason: format!(
                        "Allen id {id} (channel {channel}) is not in the Allen structure table"
                    ),
                })?;
            keep[c] = Some(units.regions.len() as u32);
            units.regions.push(region.to_string());
            units.channels.push(channel);
            units.depths.push(depths[c]);
            units.good.push(good[c]);
            units.uuids.push(uuids[c].clone());
        }
        units.keep.push(keep);
    }
    report.units.1 = units.regions.len();
    Ok(units)
}

/// A converted session, ready to write.
pub struct Converted {
    /// Session constants.
    pub info: SessionInfo,
    /// Trials per split.
    pub trials: [Vec<TrialRecord>; 3],
    /// What the conversion did.
    pub report: IngestReport,
}

/// Reads, filters, bins and splits one session.
pub fn convert_session(arg: &SessionArg, options: &IngestOptions) -> Result<Converted> {
    let start = Instant::now();
    let eid = resolve_eid(arg)?;
    let folder = &arg.folder;
    let alf_dir = folder.join("alf");
    let mut report = IngestReport {
        eid: eid.clone(),
        source: folder.clone(),
        ..Default::default()
    };
    let probes: Vec<Probe> = alf::probe_folders(folder)?
        .iter()
        .map(|(name, dir)| read_probe(name, dir))
        .collect::<Result<_>>()?;
    report.probes = probes.iter().map(|p| p.name.clone()).collect();
    report.spikes_read = probes.iter().map(|p| p.times.len()).sum();
    let units = read_units(&probes, options, &mut report)?;
    let n_units = units.regions.len();

    // Trials.
    let trials_path = alf_dir.join("_ibl_trials.table.pqt");
    let names = [
        "stimOn_times",
        "firstMovement_times",
        "choice",
        "feedbackType",
        "probabilityLeft",
        "goCue_times",
        "feedback_times",
    ];
    let columns = alf::parquet_columns(&trials_path, &names)?;
    for (name, column) in names.iter().zip(&columns).take(5) {
        if column.is_none() {
            return Err(IngestError::Read {
                path: trials_path.clone(),
                reason: format!("no column `{name}`"),
            });
        }
    }
    let col = |i: usize| columns[i].as_deref();
    let (stim_on, movement, choice, feedback, block) = (
        col(0).expect("checked"),
        col(1).expect("checked"),
        col(2).expect("checked"),
        col(3).expect("checked"),
        col(4).expect("checked"),
    );
    let whisker = match read_trace(
        &alf_dir,
        "_ibl_leftCamera.times.npy",
        "_ibl_leftCamera.ROIMotionEnergy.npy",
    )? {
        Some(trace) => Some(trace),
        None => {
            let right = read_trace(
                &alf_dir,
                "_ibl_rightCamera.times.npy",
                "_ibl_rightCamera.ROIMotionEnergy.npy",
            )?;
            report.missing.push(match right {
                Some(_) => "left camera motion energy (right camera used)".into(),
                None => "camera motion energy (whisker-motion-energy written as NaN)".into(),
            });
            right
        }
    };
    let wheel = read_trace(
        &alf_dir,
        "_ibl_wheel.timestamps.npy",
        "_ibl_wheel.position.npy",
    )?
    .map(|trace| Trace {
        values: gradient(&trace.times, &trace.values)
            .into_iter()
            .map(f64::abs)
            .collect(),
        times: trace.times,
    });
    if wheel.is_none() {
        report.missing.push("wheel (wheel-speed left out)".into());
    }

    let trains: Vec<SpikeTrain> = probes
        .iter()
        .zip(&units.keep)
        .map(|(probe, keep)| SpikeTrain {
            times: &probe.times,
            units: &probe.clusters,
            keep,
        })
        .collect();
    let table = TrialColumns {
        stim_on,
        movement,
        choice,
        feedback,
        block,
        also_finite: [col(5), col(6)].into_iter().flatten().collect(),
    };
    let trials = align::align(
        folder,
        &table,
        &trains,
        n_units,
        whisker.as_ref(),
        wheel.as_ref(),
        SplitRule::Shuffle {
            seed: options.seed,
            eid: &eid,
        },
        &mut report,
    )?;

    let (lab, subject) = one_path_parts(folder)
        .map(|(l, s, _, _)| (l, s))
        .unwrap_or_default();
    let info = SessionInfo {
        eid,
        probe_name: report.probes.join(","),
        subject,
        lab,
        sampling_freq: 30_000.0,
        binsize: BIN,
        interval_len: (N_BINS as f64 * BIN).round() as i64,
        regions: units.regions,
        channels: units.channels,
        depths: units.depths,
        good: units.good,
        uuids: units.uuids,
        metadata: Vec::new(),
    };
    report.convert_seconds = start.elapsed().as_secs_f64();
    Ok(Converted {
        info,
        trials,
        report,
    })
}

/// Converts and writes ALF sessions under `out`, `jobs` at a time; `progress` sees each
/// result.
pub fn ingest(
    sessions: &[SessionArg],
    out: &str,
    options: &IngestOptions,
    jobs: usize,
    progress: &(dyn Fn(&Result<IngestReport>) + Sync),
) -> Result<Vec<Result<IngestReport>>> {
    convert_all(
        sessions,
        &|arg, _| convert_session(arg, options),
        out,
        options.rows_per_group,
        jobs,
        progress,
    )
}

/// Converts each of `sources` with `convert` and writes it under `out`, `jobs` sessions at
/// a time, each worker with its own current-thread runtime (which `convert` may use to
/// fetch); a source that fails is reported in its slot and the others still written.
pub(crate) fn convert_all<S: Sync>(
    sources: &[S],
    convert: &(dyn Fn(&S, &tokio::runtime::Runtime) -> Result<Converted> + Sync),
    out: &str,
    rows_per_group: usize,
    jobs: usize,
    progress: &(dyn Fn(&Result<IngestReport>) + Sync),
) -> Result<Vec<Result<IngestReport>>> {
    let root = Location::parse(out)?;
    let local = mtm_dataloader::store::local_path(out);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<IngestReport>>>> =
        Mutex::new((0..sources.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, sources.len().max(1)) {
            scope.spawn(|| {
                let runtime = mtm_dataloader::store::io_runtime();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(source) = sources.get(i) else { break };
                    let result = convert(source, &runtime).and_then(|c| {
                        let write = WriteOptions {
                            rows_per_group,
                            ..WriteOptions::default()
                        };
                        match &local {
                            Some(dir) => {
                                write_local_session(&runtime, dir, &c.info, &c.trials, write)
                            }
                            None => runtime
                                .block_on(write_session(&root, &c.info, &c.trials, write))
                                .map_err(IngestError::from),
                        }?;
                        Ok(c.report)
                    });
                    progress(&result);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                }
            });
        }
    });
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every session was taken by a worker"))
        .collect())
}

/// Writes a session under the local folder `dir` through a staging folder
/// (`.partial-{eid}`), renamed into place once its three splits are written: an ingest
/// stopped by a signal or a crash never leaves a `{eid}_aligned` folder that looks whole.
/// An object store has no rename; there a stopped ingest may leave a session with missing
/// splits, which `mtm data inspect` reports.
fn write_local_session(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    info: &SessionInfo,
    trials: &[Vec<TrialRecord>; 3],
    options: WriteOptions,
) -> Result<()> {
    let place = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IngestError::Place { path, source }
    };
    let staging = dir.join(format!(".partial-{}", info.eid));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(place(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(place(&staging))?;
    let staging_root = Location::parse(&staging.display().to_string())?;
    runtime.block_on(write_session(&staging_root, info, trials, options))?;
    let name = format!("{}_aligned", info.eid);
    let target = dir.join(&name);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(place(&target))?;
    }
    std::fs::rename(staging.join(&name), &target).map_err(place(&target))?;
    std::fs::remove_dir_all(&staging).map_err(place(&staging))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_semantics() {
        let (t, v) = ([0.0, 1.0, 3.0], [0.0, 10.0, 30.0]);
        assert_eq!(interp(&t, &v, -1.0), 0.0);
        assert_eq!(interp(&t, &v, 0.5), 5.0);
        assert_eq!(interp(&t, &v, 2.0), 20.0);
        assert_eq!(interp(&t, &v, 1.0), 10.0);
        assert_eq!(interp(&t, &v, 9.0), 30.0);
    }

    #[test]
    fn gradient_is_exact_for_quadratics() {
        let t: Vec<f64> = vec![0.0, 0.1, 0.3, 0.35, 0.6];
        let v: Vec<f64> = t.iter().map(|x| 3.0 * x * x + 2.0 * x).collect();
        let g = gradient(&t, &v);
        for i in 1..t.len() - 1 {
            assert!((g[i] - (6.0 * t[i] + 2.0)).abs() < 1e-9, "{i}: {}", g[i]);
        }
    }

    #[test]
    fn eids_come_from_the_argument_the_folder_or_the_one_path() {
        let arg = |s: &str| s.parse::<SessionArg>().unwrap();
        assert_eq!(resolve_eid(&arg("abc=/data/x")).unwrap(), "abc");
        let uuid = "3a3ea015-b5f4-4e8b-b189-9364d1fc7435";
        assert_eq!(resolve_eid(&arg(&format!("/cache/{uuid}"))).unwrap(), uuid);
        assert_eq!(
            resolve_eid(&arg("/cache/cortexlab/Subjects/KS014/2019-12-03/001")).unwrap(),
            "KS014_2019-12-03_001"
        );
        assert!(matches!(
            resolve_eid(&arg("/data/whatever")),
            Err(IngestError::Identity { .. })
        ));
    }
}
