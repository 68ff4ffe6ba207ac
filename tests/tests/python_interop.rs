//! Files we write are read by pyarrow and Hugging Face `datasets`; files pyarrow writes
//! from the spec alone are read by us.

use mtm_dataloader::synth::{SynthConfig, write_dataset};
use mtm_dataloader::{Behaviour, DataError, Dataset, Split, WriteOptions};
use mtm_tests::run_python;
use serde_json::Value;

#[test]
fn pyarrow_and_datasets_read_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let config = SynthConfig {
        sessions: 2,
        seed: 3,
        units: (20, 40),
        trials: (30, 40),
        regions: (3, 4),
        ..SynthConfig::default()
    };
    write_dataset(
        root,
        &config,
        WriteOptions {
            rows_per_group: 8,
            ..Default::default()
        },
        |_, _| {},
    )
    .unwrap();
    let python: Value = serde_json::from_str(&run_python("read_ours.py", &[root])).unwrap();
    let dataset = Dataset::open(root).unwrap();
    assert_eq!(python.as_object().unwrap().len(), 2);
    for (index, session) in dataset.sessions.iter().enumerate() {
        let theirs = &python[&session.eid];
        for split in Split::ALL {
            let theirs = &theirs[split.name()];
            let n = session.trials(split);
            assert_eq!(theirs["rows"].as_u64().unwrap() as usize, n);
            let batch = dataset
                .read_batch(index, split, &(0..n as u32).collect::<Vec<_>>())
                .unwrap();
            let per_trial = batch.n_bins * batch.n_units;
            let mut unit_sums = vec![0.0f64; batch.n_units];
            for i in 0..n {
                let trial = &batch.spikes[i * per_trial..(i + 1) * per_trial];
                let sum: f32 = trial.iter().sum();
                assert_eq!(
                    sum as u64,
                    theirs["trial_sums"][i].as_u64().unwrap(),
                    "{split} trial {i}"
                );
                for (k, &c) in trial.iter().enumerate() {
                    unit_sums[k % batch.n_units] += c as f64;
                }
                assert_eq!(
                    batch.behaviour.get(Behaviour::Choice).unwrap()[i] as f64,
                    theirs["choice"][i].as_f64().unwrap()
                );
            }
            let their_units: Vec<f64> = theirs["unit_sums"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(unit_sums, their_units);
        }
    }
}

#[test]
fn we_read_a_session_pyarrow_wrote_from_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let written: Value = serde_json::from_str(&run_python("write_session.py", &[root])).unwrap();
    let dataset = Dataset::open(root).unwrap();
    assert_eq!(dataset.sessions.len(), 1);
    let session = &dataset.sessions[0];
    assert_eq!(session.eid, written["eid"].as_str().unwrap());
    assert_eq!(session.n_units, 25);
    assert_eq!(
        session.region_counts(),
        vec![
            ("CA1".to_string(), 10),
            ("DG-mo".into(), 8),
            ("LP".into(), 7)
        ]
    );
    assert!(session.behaviour.whisker && session.behaviour.choice && !session.behaviour.wheel);
    for split in Split::ALL {
        let expected = &written["splits"][split.name()];
        let dense = expected["dense"].as_array().unwrap();
        // Several row groups of 4: read in an order that crosses them.
        let trials: Vec<u32> = (0..dense.len() as u32).rev().collect();
        let batch = dataset.read_batch(0, split, &trials).unwrap();
        let per_trial = batch.n_bins * batch.n_units;
        for (i, &trial) in trials.iter().enumerate() {
            let want: Vec<f32> = dense[trial as usize]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                &batch.spikes[i * per_trial..(i + 1) * per_trial],
                &want[..],
                "{split} trial {trial}"
            );
            assert_eq!(
                batch.behaviour.get(Behaviour::Choice).unwrap()[i],
                expected["choice"][trial as usize].as_f64().unwrap() as f32
            );
            let whisker = &batch.behaviour.get(Behaviour::Whisker).unwrap()[i * 100..(i + 1) * 100];
            for (t, &w) in whisker.iter().enumerate() {
                let want = expected["whisker"][trial as usize * 100 + t]
                    .as_f64()
                    .unwrap() as f32;
                assert_eq!(w, want);
            }
        }
    }
}

#[test]
fn shape_disagreeing_with_cluster_regions_names_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    run_python("write_session.py", &[root, "--bad-shape"]);
    let err = Dataset::open(root).unwrap_err();
    let msg = err.to_string();
    match &err {
        DataError::InvalidRow {
            url, row: 0, field, ..
        } => {
            assert_eq!(field, "spikes_sparse_shape");
            assert!(url.ends_with("train-00000-of-00001.parquet"), "{msg}");
        }
        other => panic!("expected an invalid-row error, got {other}"),
    }
    assert!(
        msg.contains("cluster_regions") && msg.contains("27"),
        "{msg}"
    );
}
