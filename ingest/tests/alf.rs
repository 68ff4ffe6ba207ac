//! ALF sessions written by an independent Python program (numpy + pyarrow), converted, and
//! checked against what that program computed: kept trials, binned counts, behaviour,
//! regions, splits; and every bad input reported with its file.

use std::path::PathBuf;

use mtm_dataloader::{Behaviour, Dataset, Split};
use mtm_ingest::{IngestError, IngestOptions, RegionLevel, SessionArg, convert_session, ingest};
use mtm_tests::json::{floats, strings};
use serde_json::Value;

fn sessions() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = mtm_tests::run_python("make_alf.py", &[dir.path().to_str().unwrap()]);
    (dir, serde_json::from_str(&out).unwrap())
}

fn arg(expected: &Value) -> SessionArg {
    SessionArg {
        eid: None,
        folder: PathBuf::from(expected["folder"].as_str().unwrap()),
    }
}

#[test]
fn converted_sessions_match_an_independent_computation() {
    let (dir, expected) = sessions();
    let out = dir.path().join("dataset");
    let args: Vec<SessionArg> = ["two-probes", "one-probe"]
        .iter()
        .map(|k| arg(&expected[k]))
        .collect();
    let results = ingest(
        &args,
        out.to_str().unwrap(),
        &IngestOptions::default(),
        2,
        &|_| {},
    )
    .unwrap();
    let dataset = Dataset::open(out.to_str().unwrap()).unwrap();
    for (key, result) in ["two-probes", "one-probe"].iter().zip(results) {
        let want = &expected[key];
        let report = result.unwrap();
        assert_eq!(
            report.trials_total as u64,
            want["trials_total"].as_u64().unwrap()
        );
        assert_eq!(
            report.dropped_nan as u64,
            want["dropped_nan"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(
            report.dropped_no_choice as u64,
            want["dropped_no_choice"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(
            report.dropped_reaction_time as u64,
            want["dropped_rt"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(report.spikes_read as u64, want["spikes"].as_u64().unwrap());

        let index = dataset
            .session_index(&report.eid)
            .expect("written session is found");
        let session = &dataset.sessions[index];
        assert_eq!(session.regions, strings(&want["regions"]["allen"]), "{key}");
        let trials = want["trials"].as_array().unwrap();
        let n = trials.len();
        assert_eq!(
            [
                session.trials(Split::Train),
                session.trials(Split::Val),
                session.trials(Split::Test)
            ],
            [n * 7 / 10, n / 10, n - n * 7 / 10 - n / 10]
        );
        assert_eq!(session.behaviour.wheel, *key == "two-probes");

        let mut seen = vec![false; n];
        for split in Split::ALL {
            let rows = session.trials(split) as u32;
            let batch = dataset
                .read_batch(index, split, &(0..rows).collect::<Vec<_>>())
                .unwrap();
            let per_trial = batch.n_bins * batch.n_units;
            let mut previous = None;
            for i in 0..rows as usize {
                let counts: Vec<f64> = batch.spikes[i * per_trial..(i + 1) * per_trial]
                    .iter()
                    .map(|&c| c as f64)
                    .collect();
                let k = trials
                    .iter()
                    .position(|t| floats(&t["counts"]) == counts)
                    .unwrap_or_else(|| {
                        panic!("{key} {split} row {i}: counts match no expected trial")
                    });
                assert!(!seen[k], "trial {k} written twice");
                seen[k] = true;
                assert!(
                    previous.is_none_or(|p| p < k),
                    "trials keep their time order within a split"
                );
                previous = Some(k);
                let t = &trials[k];
                assert_eq!(
                    batch.behaviour.get(Behaviour::Choice).unwrap()[i] as f64,
                    t["choice"].as_f64().unwrap()
                );
                assert_eq!(
                    batch.behaviour.get(Behaviour::Block).unwrap()[i],
                    t["block"].as_f64().unwrap() as f32
                );
                assert_eq!(
                    batch.behaviour.get(Behaviour::Reward).unwrap()[i] as f64,
                    t["reward"].as_f64().unwrap()
                );
                let close = |got: &[f32], want: Vec<f64>| {
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0),
                            "{g} vs {w}"
                        );
                    }
                };
                close(
                    &batch.behaviour.get(Behaviour::Whisker).unwrap()[i * 100..(i + 1) * 100],
                    floats(&t["whisker"]),
                );
                if let Some(wheel) = batch.behaviour.get(Behaviour::Wheel) {
                    close(&wheel[i * 100..(i + 1) * 100], floats(&t["wheel"]));
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "every kept trial is written");
    }
}

#[test]
fn regions_coarsen_and_units_filter() {
    let (_dir, expected) = sessions();
    let want = &expected["two-probes"];
    for (level, key) in [
        (RegionLevel::Beryl, "beryl"),
        (RegionLevel::Cosmos, "cosmos"),
    ] {
        let options = IngestOptions {
            region_level: level,
            ..Default::default()
        };
        let converted = convert_session(&arg(want), &options).unwrap();
        assert_eq!(converted.info.regions, strings(&want["regions"][key]));
    }
    let good: Vec<u64> = want["good"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_u64().unwrap())
        .collect();
    let converted = convert_session(
        &arg(want),
        &IngestOptions {
            good_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let allen = strings(&want["regions"]["allen"]);
    let kept: Vec<String> = allen
        .iter()
        .zip(&good)
        .filter(|(_, g)| **g == 1)
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(converted.info.regions, kept);
    assert!(converted.info.good.iter().all(|&g| g == 1));
    assert_eq!(converted.report.units, (allen.len(), kept.len()));
    let converted = convert_session(
        &arg(want),
        &IngestOptions {
            min_rate_hz: Some(1e6),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(converted.info.regions.is_empty());
}

#[test]
fn bad_sessions_are_reported_with_their_file() {
    let (_dir, expected) = sessions();
    let options = IngestOptions::default();
    let err = |key: &str| match convert_session(&arg(&expected[key]), &options) {
        Ok(_) => panic!("{key} must not convert"),
        Err(e) => e,
    };
    match err("missing") {
        IngestError::MissingFile { path } => {
            assert!(path.ends_with("probe00/spikes.clusters.npy"), "{path:?}")
        }
        other => panic!("{other}"),
    }
    match err("lengths") {
        e @ IngestError::Mismatch { .. } => assert!(
            e.to_string()
                .contains("spikes.clusters and spikes.times lengths differ"),
            "{e}"
        ),
        other => panic!("{other}"),
    }
    match err("order") {
        e @ IngestError::Read { .. } => {
            let msg = e.to_string();
            assert!(
                msg.contains("spikes.times.npy") && msg.contains("out of order at index"),
                "{msg}"
            );
        }
        other => panic!("{other}"),
    }
    match err("no-trials") {
        e @ IngestError::NoTrials { .. } => {
            assert!(e.to_string().contains("42 without a choice"), "{e}")
        }
        other => panic!("{other}"),
    }
}
