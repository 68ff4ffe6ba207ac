//! Seeds aggregated: for each setting (model, masking, pretraining sessions) and metric,
//! the mean over seeds, their spread, and the baseline and ceiling scored on the same
//! entries. Written as `summary.csv` and as the Markdown table of `summary.md`.

use std::path::Path;

use crate::results::{self, MetricOf, Row};
use crate::{Result, io};

/// The metrics summarised: the held-out metrics, then co-smoothing and forward prediction
/// on the pretraining sessions themselves.
pub const SUMMARIZED: [&str; 8] = [
    "co_smooth",
    "forward",
    "intra",
    "inter",
    "choice",
    "whisker",
    "own_co_smooth",
    "own_forward",
];

/// One setting's metric over its seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedSummary {
    /// Model size name.
    pub model: String,
    /// Masking scheme.
    pub masking: String,
    /// Pretraining sessions (0: from scratch).
    pub sessions: u64,
    /// The metric (a results column).
    pub metric: &'static str,
    /// `(seed, value)` of every seed that has the metric, in seed order.
    pub values: Vec<(u64, f64)>,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (`None` with one seed).
    pub sd: Option<f64>,
    /// Smallest seed's value.
    pub min: f64,
    /// Largest seed's value.
    pub max: f64,
    /// The baseline on the same entries, mean over seeds (`None` where not scored).
    pub baseline: Option<f64>,
    /// The true rates on the same entries, mean over seeds (synthetic data).
    pub ceiling: Option<f64>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The references of `metric`: its `_baseline` and `_ceiling` columns.
fn references(metric: &str) -> (Option<MetricOf>, Option<MetricOf>) {
    (
        results::column(&format!("{metric}_baseline")),
        results::column(&format!("{metric}_ceiling")),
    )
}

/// Every (model, masking, sessions, metric) with at least one seed's value, in that
/// order.
pub fn summarize(rows: &[Row]) -> Vec<SeedSummary> {
    let mut settings: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| (r.model.clone(), r.masking.clone(), r.sessions))
        .collect();
    settings.sort();
    settings.dedup();
    let mut out = Vec::new();
    for (model, masking, sessions) in settings {
        let mut group: Vec<&Row> = rows
            .iter()
            .filter(|r| r.model == model && r.masking == masking && r.sessions == sessions)
            .collect();
        group.sort_by_key(|r| r.seed);
        for metric in SUMMARIZED {
            let get = results::column(metric).expect("a results column");
            let values: Vec<(u64, f64)> = group
                .iter()
                .filter_map(|r| get(r).map(|v| (r.seed, v)))
                .collect();
            if values.is_empty() {
                continue;
            }
            let v: Vec<f64> = values.iter().map(|p| p.1).collect();
            let m = mean(&v).expect("not empty");
            let sd = (v.len() > 1).then(|| {
                (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
            });
            let (baseline, ceiling) = references(metric);
            let over_seeds = |get: Option<MetricOf>| {
                get.and_then(|get| mean(&group.iter().filter_map(|r| get(r)).collect::<Vec<_>>()))
            };
            out.push(SeedSummary {
                model: model.clone(),
                masking: masking.clone(),
                sessions,
                metric,
                mean: m,
                sd,
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                values,
                baseline: over_seeds(baseline),
                ceiling: over_seeds(ceiling),
            });
        }
    }
    out
}

/// Writes `summary.csv` in `dir`: one line per setting and metric.
pub fn write_csv(dir: &Path, summaries: &[SeedSummary]) -> Result<()> {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut csv =
        String::from("model,masking,sessions,metric,seeds,mean,sd,min,max,baseline,ceiling\n");
    for s in summaries {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            results::csv_field(&s.model),
            results::csv_field(&s.masking),
            s.sessions,
            s.metric,
            s.values.len(),
            s.mean,
            opt(s.sd),
            s.min,
            s.max,
            opt(s.baseline),
            opt(s.ceiling)
        ));
    }
    let path = dir.join("summary.csv");
    std::fs::write(&path, csv).map_err(io(&path))
}

/// `mean ± sd (min-max)`, or the one value.
fn spread(s: &SeedSummary) -> String {
    match s.sd {
        Some(sd) => format!("{:.3} ± {:.3} ({:.3} to {:.3})", s.mean, sd, s.min, s.max),
        None => format!("{:.3}", s.mean),
    }
}

/// The Markdown table: one row per setting, one column per metric present (mean ± sd
/// over seeds, min to max), co-smoothing on the pretraining sessions with its baseline,
/// and last the held-out baseline and ceiling rows.
pub fn markdown(summaries: &[SeedSummary]) -> String {
    let present: Vec<&str> = SUMMARIZED
        .into_iter()
        .filter(|m| summaries.iter().any(|s| s.metric == *m))
        .collect();
    let mut settings: Vec<(&str, &str, u64)> = summaries
        .iter()
        .map(|s| (s.model.as_str(), s.masking.as_str(), s.sessions))
        .collect();
    settings.dedup();
    let mut out = String::from("| model | masking | pretraining sessions | seeds |");
    for m in &present {
        out.push_str(&format!(" {} |", title(m)));
    }
    out.push_str("\n|---|---|---|---|");
    out.push_str(&"---|".repeat(present.len()));
    out.push('\n');
    let find = |setting: (&str, &str, u64), metric: &str| {
        summaries.iter().find(|s| {
            (s.model.as_str(), s.masking.as_str(), s.sessions) == setting && s.metric == metric
        })
    };
    for setting in &settings {
        let seeds = present
            .iter()
            .filter_map(|m| find(*setting, m))
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0);
        let sessions = if setting.2 == 0 {
            "0 (from scratch)".to_string()
        } else {
            setting.2.to_string()
        };
        out.push_str(&format!(
            "| {} | {} | {sessions} | {seeds} |",
            setting.0, setting.1
        ));
        for m in &present {
            let cell = match find(*setting, m) {
                Some(s) if is_own(m) => match s.baseline {
                    Some(b) => format!("{} (baseline {b:.3})", spread(s)),
                    None => spread(s),
                },
                Some(s) => spread(s),
                None => "-".into(),
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    for (name, get) in [
        (
            "smoothing + GLM baseline",
            (|s: &SeedSummary| s.baseline) as fn(&SeedSummary) -> Option<f64>,
        ),
        ("true rates (ceiling)", |s: &SeedSummary| s.ceiling),
    ] {
        out.push_str(&format!("| {name} | | | |"));
        for m in &present {
            let values: Vec<f64> = summaries
                .iter()
                .filter(|s| s.metric == *m)
                .filter_map(get)
                .collect();
            let cell = match (mean(&values), is_own(m)) {
                (Some(v), false) => format!("{v:.3}"),
                (Some(_), true) => "per row".into(),
                (None, _) => "-".into(),
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

/// Whether `metric` is scored on the pretraining sessions: each row has its own baseline
/// and ceiling there (its own sessions), shown in the row rather than once at the foot.
fn is_own(metric: &str) -> bool {
    metric.starts_with("own_")
}

/// A metric's column heading.
pub fn title(metric: &str) -> &'static str {
    results::describe(metric).heading
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::row;

    #[test]
    fn seeds_are_aggregated_per_setting_with_their_references() {
        // A 3-cell sweep (1, 2 and 4 sessions) with 2 seeds: 6 rows.
        let mut rows = Vec::new();
        for (sessions, values) in [(1, [0.10, 0.14]), (2, [0.20, 0.22]), (4, [0.30, 0.30])] {
            for (seed, v) in [1u64, 2].into_iter().zip(values) {
                let mut r = row(&format!("c{sessions}-{seed}"), sessions, Some(v));
                r.seed = seed;
                r.co_smooth_baseline = Some(0.1 + seed as f64 * 0.01);
                rows.push(r);
            }
        }
        let s = summarize(&rows);
        let co: Vec<&SeedSummary> = s.iter().filter(|s| s.metric == "co_smooth").collect();
        assert_eq!(co.len(), 3);
        assert_eq!(co[0].sessions, 1);
        assert_eq!(co[0].values, [(1, 0.10), (2, 0.14)]);
        assert!((co[0].mean - 0.12).abs() < 1e-12);
        assert!((co[0].sd.unwrap() - (0.0008f64).sqrt()).abs() < 1e-12);
        assert_eq!((co[0].min, co[0].max), (0.10, 0.14));
        assert!((co[1].baseline.unwrap() - 0.115).abs() < 1e-12);
        assert_eq!(co[2].sd, Some(0.0));
        assert_eq!(co[0].ceiling, Some(0.4));
        // A metric no row has is left out; one row's metric has no spread.
        assert!(s.iter().all(|s| s.metric != "intra"));
        let one = summarize(&rows[..1]);
        assert_eq!(
            one.iter().find(|s| s.metric == "co_smooth").unwrap().sd,
            None
        );

        let table = markdown(&s);
        assert!(
            table.contains("| small | mtm | 1 | 2 | 0.120 ± 0.028 (0.100 to 0.140) |"),
            "{table}"
        );
        assert!(table.contains("(baseline 0.150)"), "{table}");
        assert!(
            table.contains("| true rates (ceiling) | | | | 0.400 |"),
            "{table}"
        );
        let dir = tempfile::tempdir().unwrap();
        write_csv(dir.path(), &s).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
        assert!(
            csv.lines()
                .any(|l| l.starts_with("small,mtm,2,co_smooth,2,")),
            "{csv}"
        );
    }
}
