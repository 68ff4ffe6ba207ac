//! `mtm data inspect`: open every session, decode every row of every file, and report
//! what is there and what is wrong, without stopping at the first problem.

use futures::StreamExt;
use serde::Serialize;

use crate::dataset::build_runtime;
use crate::error::Result;
use crate::session::{self, Behaviour, GroupSource, Session, Split};
use crate::store::Location;

/// What one session holds.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    /// The session folder.
    pub folder: String,
    /// Session id, when its metadata could be read.
    pub eid: Option<String>,
    /// Units N.
    pub units: usize,
    /// Regions with their unit counts.
    pub regions: Vec<(String, usize)>,
    /// Trials in train, val, test.
    pub trials: [usize; 3],
    /// Mean firing rate over all units and trials (Hz), when every row decoded.
    pub mean_rate_hz: Option<f64>,
    /// Behaviour columns present.
    pub behaviour: Vec<&'static str>,
    /// For each present behaviour column with missing values (null or NaN), how many
    /// trials have at least one: evaluation leaves them out of decoding.
    pub behaviour_missing: Vec<(&'static str, usize)>,
    /// Split files with a usable compact side-car (each checked row group by row group
    /// against its Parquet file), and split files in all.
    pub sidecars: [usize; 2],
    /// Problems found, each naming the URL, row and field.
    pub problems: Vec<String>,
}

/// The whole dataset's report.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    /// The dataset URL.
    pub root: String,
    /// One entry per session folder.
    pub sessions: Vec<SessionReport>,
}

impl InspectReport {
    /// Every problem of every session.
    pub fn problems(&self) -> impl Iterator<Item = &String> {
        self.sessions.iter().flat_map(|s| &s.problems)
    }
}

/// Progress events, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Sessions are open; this many row groups will be decoded.
    Planned {
        /// Row groups to decode.
        groups: usize,
    },
    /// One more row group decoded (or failed).
    Group,
}

/// Inspects every session under `url`. Fails only when the root itself cannot be listed.
pub fn inspect(url: &str, mut progress: impl FnMut(Progress)) -> Result<InspectReport> {
    let runtime = build_runtime(2)?;
    let root = Location::parse(url)?;
    let sources = runtime.block_on(session::discover(&root))?;
    let opened: Vec<_> = runtime.block_on(
        futures::stream::iter(sources)
            .map(|source| async move {
                let folder = source.folder.url();
                (folder, session::open_session(source).await)
            })
            .buffered(8)
            .collect(),
    );
    let groups = opened
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .flat_map(|s| s.splits.iter().flatten())
        .map(|f| f.row_group_rows.len())
        .sum();
    progress(Progress::Planned { groups });
    let mut eids: Vec<(String, String)> = Vec::new();
    let mut sessions = Vec::with_capacity(opened.len());
    for (folder, opened) in opened {
        let mut report = SessionReport {
            folder: folder.clone(),
            eid: None,
            units: 0,
            regions: Vec::new(),
            trials: [0; 3],
            mean_rate_hz: None,
            behaviour: Vec::new(),
            behaviour_missing: Vec::new(),
            sidecars: [0; 2],
            problems: Vec::new(),
        };
        match opened {
            Err(e) => report.problems.push(e.to_string()),
            Ok(session) => {
                if let Some((_, other)) = eids.iter().find(|(eid, _)| *eid == session.eid) {
                    report.problems.push(format!(
                        "{folder}: eid `{}` also used by {other}",
                        session.eid
                    ));
                }
                eids.push((session.eid.clone(), folder.clone()));
                validate(&runtime, &session, &mut report, &mut progress);
            }
        }
        sessions.push(report);
    }
    Ok(InspectReport {
        root: url.to_string(),
        sessions,
    })
}

fn validate(
    runtime: &tokio::runtime::Runtime,
    session: &Session,
    report: &mut SessionReport,
    progress: &mut impl FnMut(Progress),
) {
    report.eid = Some(session.eid.clone());
    report.units = session.n_units;
    report.regions = session.region_counts();
    report.behaviour = session.behaviour.present().map(Behaviour::column).collect();
    let mut missing = vec![0usize; Behaviour::ALL.len()];
    let mut spikes = 0.0;
    let mut complete = true;
    for split in Split::ALL {
        report.trials[split as usize] = session.trials(split);
        for (f, file) in session.files(split).iter().enumerate() {
            report.sidecars[1] += 1;
            report.sidecars[0] += usize::from(file.sidecar.is_some());
            for g in 0..file.row_group_rows.len() {
                let read = |from| runtime.block_on(session::read_group(session, split, f, g, from));
                match read(GroupSource::Parquet) {
                    Ok(group) => {
                        if let Some(car) = &file.sidecar {
                            match read(GroupSource::Fastest) {
                                Ok(copy) if copy.identical(&group) => {}
                                Ok(_) => report.problems.push(format!(
                                    "{}: row group {g} differs from the Parquet file's (rewrite it with `mtm data sidecar`)",
                                    car.location.url()
                                )),
                                Err(e) => report.problems.push(e.to_string()),
                            }
                        }
                        spikes += (0..group.n_rows).map(|r| group.row_spikes(r)).sum::<f64>();
                        for b in session.behaviour.present() {
                            let values = group.behaviour.get(b).unwrap_or_default();
                            let width = if b.per_bin() { session.n_bins } else { 1 };
                            missing[b as usize] += values
                                .chunks(width.max(1))
                                .filter(|v| v.iter().any(|x| !x.is_finite()))
                                .count();
                        }
                    }
                    Err(e) => {
                        complete = false;
                        report.problems.push(e.to_string());
                    }
                }
                progress(Progress::Group);
            }
        }
    }
    report.behaviour_missing = session
        .behaviour
        .present()
        .filter(|&b| missing[b as usize] > 0)
        .map(|b| (b.column(), missing[b as usize]))
        .collect();
    let trials: usize = report.trials.iter().sum();
    if complete && trials > 0 && session.n_units > 0 {
        let seconds = trials as f64 * session.n_bins as f64 * session.binsize;
        report.mean_rate_hz = Some(spikes / (seconds * session.n_units as f64));
    }
}
