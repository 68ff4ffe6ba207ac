//! BrainWideBench session files written by the real `temporaldata` package (from a Python
//! program that also computes, with numpy, what a correct conversion gives), converted
//! and checked against it: kept trials and why the others were dropped, binned counts,
//! behaviour, the file's own split, the unit table, provenance; and broken files reported
//! by name while the others are written.
#![cfg(feature = "bwb")]

use std::path::Path;

use mtm_dataloader::{Behaviour, Dataset, Split};
use mtm_ingest::bwb::{self, Build, Part, Splits};
use mtm_ingest::{IngestError, IngestOptions, RegionLevel};
use mtm_tests::json::{floats, strings};
use serde_json::Value;

fn sessions() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let out = mtm_tests::run_python("make_bwb.py", &[root.to_str().unwrap(), "--bad"]);
    (dir, serde_json::from_str(&out).unwrap())
}

fn count(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

#[test]
fn converted_sessions_match_an_independent_computation() {
    let (dir, expected) = sessions();
    let bucket = dir.path().join("bucket");
    let out = dir.path().join("dataset");
    let mut sources = Vec::new();
    for part in [Part::Pretrain, Part::Eval] {
        sources.extend(bwb::list(bucket.to_str().unwrap(), part, Build::Selected).unwrap());
    }
    // Two good and two broken pretraining files, one eval file.
    assert_eq!(sources.len(), 5, "{sources:?}");
    let results = bwb::ingest(
        &sources,
        out.to_str().unwrap(),
        &IngestOptions::default(),
        Splits::File,
        2,
        &|_| {},
    )
    .unwrap();
    let dataset = Dataset::open(out.to_str().unwrap()).unwrap();
    assert_eq!(dataset.sessions.len(), 3);
    let mut failures = Vec::new();
    for (source, result) in sources.iter().zip(results) {
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&source.name()),
                    "{msg} names {}",
                    source.name()
                );
                failures.push((source.name(), msg));
                continue;
            }
        };
        let want = &expected[&report.eid];
        let key = &report.eid;
        assert_eq!(report.trials_total, count(&want["trials_total"]), "{key}");
        let dropped = &want["dropped"];
        assert_eq!(
            [
                report.dropped_nan,
                report.dropped_no_choice,
                report.dropped_reaction_time,
                report.dropped_split
            ],
            [
                count(&dropped["nan"]),
                count(&dropped["no_choice"]),
                count(&dropped["rt"]),
                count(&dropped["split"])
            ],
            "{key}"
        );
        assert!(
            dropped["split"].as_u64().unwrap() > 0,
            "the test covers straddlers"
        );
        assert_eq!(report.spikes_read, count(&want["spikes"]));
        assert_eq!(report.probes, ["probe00"]);

        let index = dataset
            .session_index(key)
            .expect("written session is found");
        let session = &dataset.sessions[index];
        assert_eq!(session.regions, strings(&want["regions"]["allen"]), "{key}");
        assert!(session.behaviour.wheel);
        let trials = want["trials"].as_array().unwrap();
        let per_split = |s: u64| trials.iter().filter(|t| t["split"] == s).count();
        assert_eq!(
            [
                session.trials(Split::Train),
                session.trials(Split::Val),
                session.trials(Split::Test)
            ],
            [per_split(0), per_split(1), per_split(2)],
            "{key}"
        );
        if want["kind"] == "eval" {
            assert!(per_split(2) > 0, "eval files keep BWB's test split");
        } else {
            assert_eq!(per_split(2), 0, "pretraining files have no test split");
        }

        let mut seen = vec![false; trials.len()];
        for split in Split::ALL {
            let rows = session.trials(split) as u32;
            if rows == 0 {
                continue;
            }
            let batch = dataset
                .read_batch(index, split, &(0..rows).collect::<Vec<_>>())
                .unwrap();
            let per_trial = batch.n_bins * batch.n_units;
            for i in 0..rows as usize {
                let counts: Vec<f64> = batch.spikes[i * per_trial..(i + 1) * per_trial]
                    .iter()
                    .map(|&c| c as f64)
                    .collect();
                let k = trials
                    .iter()
                    .position(|t| {
                        t["counts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .flat_map(floats)
                            .eq(counts.iter().copied())
                    })
                    .unwrap_or_else(|| panic!("{key} {split} row {i}: counts match no trial"));
                assert!(!seen[k], "trial {k} written twice");
                seen[k] = true;
                let t = &trials[k];
                assert_eq!(
                    t["split"].as_u64().unwrap(),
                    split as u64,
                    "{key} trial {k}"
                );
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
                    assert_eq!(got.len(), want.len());
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
                close(
                    &batch.behaviour.get(Behaviour::Wheel).unwrap()[i * 100..(i + 1) * 100],
                    floats(&t["wheel"]),
                );
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "{key}: every kept trial is written"
        );
    }
    failures.sort();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].1.contains("/spikes"),
        "a file without /spikes says so: {}",
        failures[0].1
    );
    assert!(
        failures[1].1.contains("not a readable HDF5 file"),
        "{}",
        failures[1].1
    );
}

fn eval_file(bucket: &Path) -> std::path::PathBuf {
    let source = bwb::list(bucket.to_str().unwrap(), Part::Eval, Build::Selected).unwrap();
    mtm_dataloader::store::local_path(&source[0].url()).unwrap()
}

#[test]
fn unit_table_regions_provenance_and_the_shuffle() {
    let (dir, expected) = sessions();
    let path = eval_file(&dir.path().join("bucket"));
    let convert =
        |options: &IngestOptions, splits| bwb::convert_file(&path, &path, options, splits).unwrap();
    let c = convert(&IngestOptions::default(), Splits::File);
    let want = &expected[&c.info.eid];
    assert_eq!(c.info.uuids, strings(&want["uuids"]));
    assert_eq!(
        c.info.good,
        want["good"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_i64().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        c.info.channels,
        want["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_i64().unwrap())
            .collect::<Vec<_>>()
    );
    // JSON carries the depths to within a unit in the last place.
    for (got, want) in c.info.depths.iter().zip(floats(&want["depths"])) {
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
    }
    assert_eq!(c.info.subject, want["subject"].as_str().unwrap());
    assert_eq!(c.info.lab, "testlab");
    assert_eq!(c.info.probe_name, "probe00");
    let meta = |k: &str| {
        c.info
            .metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        meta("bwb.provenance.pipeline_commit").as_deref(),
        Some("abc123")
    );
    assert_eq!(
        meta("bwb.brainset.unit_filtering").as_deref(),
        Some("selected_units")
    );
    assert_eq!(
        meta("bwb.file"),
        path.file_name().map(|n| n.to_string_lossy().into_owned())
    );

    // Beryl is a variable-length string column, Cosmos a fixed-length one.
    for (level, key) in [
        (RegionLevel::Beryl, "beryl"),
        (RegionLevel::Cosmos, "cosmos"),
    ] {
        let options = IngestOptions {
            region_level: level,
            ..Default::default()
        };
        assert_eq!(
            convert(&options, Splits::File).info.regions,
            strings(&want["regions"][key])
        );
    }
    let good_only = convert(
        &IngestOptions {
            good_only: true,
            ..Default::default()
        },
        Splits::File,
    );
    assert!(good_only.info.good.iter().all(|&g| g == 1));
    assert_eq!(
        good_only.report.units.1,
        c.info.good.iter().filter(|&&g| g == 1).count()
    );

    // mtm's shuffle keeps the trials that straddle BWB's domains, 70/10/20.
    let shuffled = convert(&IngestOptions::default(), Splits::Shuffle);
    let n = c.report.splits.iter().sum::<usize>() + c.report.dropped_split;
    assert_eq!(shuffled.report.dropped_split, 0);
    assert_eq!(
        shuffled.report.splits,
        [n * 7 / 10, n / 10, n - n * 7 / 10 - n / 10]
    );
}

#[test]
fn a_file_named_for_another_session_is_refused() {
    let (dir, _) = sessions();
    let path = eval_file(&dir.path().join("bucket"));
    let renamed = dir.path().join("11111111-2222-3333-4444-555555555555.h5");
    std::fs::copy(&path, &renamed).unwrap();
    match bwb::convert_file(&renamed, &renamed, &IngestOptions::default(), Splits::File) {
        Err(e @ IngestError::Mismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("11111111-2222-3333-4444-555555555555.h5")
                    && msg.contains("/session@id"),
                "{msg}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a misnamed file must not convert"),
    }
    let err = bwb::list(
        dir.path().join("nothing-here").to_str().unwrap(),
        Part::Pretrain,
        Build::All,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no session files"), "{err}");
}
