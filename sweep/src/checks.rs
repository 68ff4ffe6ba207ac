//! The sweep's claims checked in words, for `summary.md` and the terminal: whether each
//! pretrained cell learned its own sessions better than the baseline does, whether
//! pretraining beats training from scratch on every held-out session, and whether MtM
//! beats each other masking scheme at every pool size.
//!
//! Every comparison is between means over seeds, so one lucky seed cannot carry it; the
//! lines name what fails, with its numbers, rather than only counting.

use std::collections::BTreeSet;

use mtm_trainer::config::Task;

use crate::results::{self, Row};

/// One held-out session's score of one cell after fine-tuning (the results tables keep
/// only the mean over held-out sessions).
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOutScore {
    /// The cell (a row's `run_id`).
    pub run_id: String,
    /// The held-out session.
    pub eid: String,
    /// The metric: a held-out results column (`co_smooth`, `forward`, `intra`, `inter`).
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
}

/// The held-out activity metrics the per-session and between-masking checks cover: (results
/// column, the task that scores it).
pub const CHECKED: [(&str, Task); 4] = [
    ("co_smooth", Task::CoSmooth),
    ("forward", Task::Forward),
    ("intra", Task::Intra),
    ("inter", Task::Inter),
];

/// The scores on a cell's own pretraining sessions: (model column, baseline column, words).
const OWN: [(&str, &str, &str); 2] = [
    ("own_co_smooth", "own_co_smooth_baseline", "co-smoothing"),
    ("own_forward", "own_forward_baseline", "forward prediction"),
];

/// How many failures a line names before it only counts.
const NAMED: usize = 4;

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A short form of a session id for the lines.
fn short(eid: &str) -> &str {
    eid.get(..8).unwrap_or(eid)
}

/// "; not at: a, b, c and 2 more", or nothing.
fn failures(list: &[String]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let shown = list
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = list.len().saturating_sub(NAMED);
    if more > 0 {
        format!("; not: {shown} and {more} more")
    } else {
        format!("; not: {shown}")
    }
}

/// The checks, one line each, in the order: own sessions, pretrained against from
/// scratch per held-out session, MtM against each other masking.
pub fn checks(rows: &[Row], held_out: &[HeldOutScore]) -> Vec<String> {
    let mut lines = Vec::new();
    let groups: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.model.as_str(), r.masking.as_str()))
        .collect();
    let models: BTreeSet<&str> = groups.iter().map(|g| g.0).collect();
    let name = |model: &str, masking: &str| {
        if models.len() > 1 {
            format!("{masking} ({model})")
        } else {
            masking.to_string()
        }
    };
    // 1. Each pretrained cell (every seed) on its own sessions, against the baseline there.
    for (column, baseline, words) in OWN {
        let (get, reference) = (
            results::column(column).expect("a results column"),
            results::column(baseline).expect("a results column"),
        );
        for &(model, masking) in &groups {
            let scored: Vec<(&Row, f64, f64)> = rows
                .iter()
                .filter(|r| r.model == model && r.masking == masking)
                .filter_map(|r| Some((r, get(r)?, reference(r)?)))
                .collect();
            if scored.is_empty() {
                continue;
            }
            let below: Vec<String> = scored
                .iter()
                .filter(|(_, v, b)| v <= b)
                .map(|(r, v, b)| format!("{} {v:.3} against {b:.3}", r.run_id))
                .collect();
            lines.push(format!(
                "{words} on its own pretraining sessions, {}: {} of {} pretrained cells above the smoothing + GLM baseline{}",
                name(model, masking),
                scored.len() - below.len(),
                scored.len(),
                failures(&below)
            ));
        }
    }
    // 2. Pretrained against from scratch, per held-out session, on seed means.
    let seed_mean = |model: &str, masking: &str, sessions: u64, eid: &str, metric: &str| {
        let ids: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.model == model && r.masking == masking && r.sessions == sessions)
            .map(|r| r.run_id.as_str())
            .collect();
        let values: Vec<f64> = held_out
            .iter()
            .filter(|s| s.eid == eid && s.metric == metric && ids.contains(s.run_id.as_str()))
            .map(|s| s.value)
            .collect();
        mean(&values)
    };
    let eids: BTreeSet<&str> = held_out.iter().map(|s| s.eid.as_str()).collect();
    for &(model, masking) in &groups {
        let sizes: BTreeSet<u64> = rows
            .iter()
            .filter(|r| r.model == model && r.masking == masking && r.sessions > 0)
            .map(|r| r.sessions)
            .collect();
        for (metric, _) in CHECKED {
            let mut compared = 0;
            let mut behind = Vec::new();
            for &eid in &eids {
                let Some(scratch) = seed_mean(model, masking, 0, eid, metric) else {
                    continue;
                };
                for &n in &sizes {
                    if let Some(v) = seed_mean(model, masking, n, eid, metric) {
                        compared += 1;
                        if v <= scratch {
                            behind.push(format!(
                                "n = {n} on {} ({v:.3} against {scratch:.3})",
                                short(eid)
                            ));
                        }
                    }
                }
            }
            if compared == 0 {
                continue;
            }
            lines.push(format!(
                "{}, {}: pretrained above from scratch on {} of {compared} (pool size, held-out session) pairs{}",
                results::describe(metric).heading,
                name(model, masking),
                compared - behind.len(),
                failures(&behind)
            ));
        }
    }
    // 3. MtM against each other masking scheme, per pool size (0: from scratch), on the
    // seed means of the mean over held-out sessions.
    for &model in &models {
        if !groups.contains(&(model, "mtm")) {
            continue;
        }
        for &(_, other) in groups.iter().filter(|g| g.0 == model && g.1 != "mtm") {
            for (metric, _) in CHECKED {
                let get = results::column(metric).expect("a results column");
                let at = |masking: &str, n: u64| {
                    let v: Vec<f64> = rows
                        .iter()
                        .filter(|r| r.model == model && r.masking == masking && r.sessions == n)
                        .filter_map(get)
                        .collect();
                    mean(&v)
                };
                let sizes: BTreeSet<u64> = rows.iter().map(|r| r.sessions).collect();
                let mut compared = 0;
                let mut behind = Vec::new();
                for n in sizes {
                    if let (Some(a), Some(b)) = (at("mtm", n), at(other, n)) {
                        compared += 1;
                        if a <= b {
                            behind.push(format!("n = {n} ({a:.3} against {b:.3})"));
                        }
                    }
                }
                if compared == 0 {
                    continue;
                }
                lines.push(format!(
                    "{}: {} above {} at {} of {compared} pool sizes (from scratch included){}",
                    results::describe(metric).heading,
                    name(model, "mtm"),
                    name(model, other),
                    compared - behind.len(),
                    failures(&behind)
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::row;

    fn score(run_id: &str, eid: &str, value: f64) -> HeldOutScore {
        HeldOutScore {
            run_id: run_id.into(),
            eid: eid.into(),
            metric: "co_smooth",
            value,
        }
    }

    #[test]
    fn each_claim_is_checked_and_its_failures_named() {
        // MtM and temporal, from scratch and on 1 and 2 sessions, 2 seeds each.
        let mut rows = Vec::new();
        let mut held_out = Vec::new();
        for masking in ["mtm", "temporal"] {
            for n in [0u64, 1, 2] {
                for seed in [1u64, 2] {
                    let id = format!("{masking}-{n}-{seed}");
                    let base = if masking == "mtm" { 0.5 } else { 0.3 };
                    let mut r = row(&id, n, Some(base + 0.01 * n as f64));
                    r.masking = masking.into();
                    r.seed = seed;
                    r.own_forward = None;
                    r.own_forward_baseline = None;
                    if n == 0 {
                        r.own_co_smooth = None;
                        r.own_co_smooth_baseline = None;
                    } else if masking == "temporal" && n == 2 && seed == 2 {
                        // One cell below its baseline on its own sessions.
                        r.own_co_smooth = Some(0.1);
                    }
                    rows.push(r);
                    // Session "aaaaaaaa-1": pretraining helps at n = 1 and 2; session
                    // "bbbbbbbb-2": at n = 2 only for mtm (n = 1 ties with scratch).
                    held_out.push(score(&id, "aaaaaaaa-1", 0.4 + 0.02 * n as f64));
                    let b = if n == 1 { 0.4 } else { 0.4 + 0.02 * n as f64 };
                    held_out.push(score(&id, "bbbbbbbb-2", b));
                }
            }
        }
        // A seed mean decides: one seed of mtm at n = 2 on session b falls behind scratch,
        // the other is far enough ahead to keep the mean above it.
        for s in held_out.iter_mut() {
            if s.run_id == "mtm-2-1" && s.eid == "bbbbbbbb-2" {
                s.value = 0.39;
            }
            if s.run_id == "mtm-2-2" && s.eid == "bbbbbbbb-2" {
                s.value = 0.5;
            }
        }
        let lines = checks(&rows, &held_out);
        let find = |start: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no line {start}: {lines:#?}"))
        };
        assert_eq!(
            find("co-smoothing on its own pretraining sessions, mtm"),
            "co-smoothing on its own pretraining sessions, mtm: 4 of 4 pretrained cells above the smoothing + GLM baseline"
        );
        assert_eq!(
            find("co-smoothing on its own pretraining sessions, temporal"),
            "co-smoothing on its own pretraining sessions, temporal: 3 of 4 pretrained cells above the smoothing + GLM baseline; not: temporal-2-2 0.100 against 0.150"
        );
        // No cell has forward prediction on its own sessions: no line.
        assert!(!lines.iter().any(|l| l.starts_with("forward prediction on")));
        assert_eq!(
            find("held-out co-smoothing, mtm"),
            "held-out co-smoothing, mtm: pretrained above from scratch on 3 of 4 (pool size, held-out session) pairs; not: n = 1 on bbbbbbbb (0.400 against 0.400)"
        );
        // Only co-smoothing has per-session scores.
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("held-out intra-region, mtm:"))
        );
        // Rows' co_smooth: mtm 0.5 + 0.01 n against temporal 0.3 + 0.01 n.
        assert_eq!(
            find("held-out co-smoothing: mtm above temporal"),
            "held-out co-smoothing: mtm above temporal at 3 of 3 pool sizes (from scratch included)"
        );
        // The row helper's inter is -0.2 for both: a tie is not a win, and is named.
        assert!(
            find("held-out inter-region: mtm above temporal").contains(
                "at 0 of 3 pool sizes (from scratch included); not: n = 0 (-0.200 against -0.200), n = 1"
            ),
            "{lines:#?}"
        );
    }
}
