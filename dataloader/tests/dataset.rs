//! The dataset layer through its public API: write → read round trips, the loader's order
//! and restore, and every bad-input case returning its error.

use std::sync::Arc;

use mtm_dataloader::synth::{SynthConfig, generate_session};
use mtm_dataloader::writer::{TrialRecord, WriteOptions, write_session, write_split};
use mtm_dataloader::{
    Behaviour, DataError, Dataset, Loader, Location, PrefetchConfig, Sampler, SamplerState,
    SessionInfo, Split,
};

fn small_config(sessions: usize) -> SynthConfig {
    SynthConfig {
        sessions,
        seed: 11,
        units: (30, 50),
        trials: (40, 60),
        regions: (3, 4),
        ..SynthConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `sessions` small synthetic sessions to `url` with small row groups.
fn write_synthetic(url: &str, sessions: usize) -> Vec<mtm_dataloader::synth::SyntheticSession> {
    let config = small_config(sessions);
    let root = Location::parse(url).unwrap();
    let generated: Vec<_> = (0..sessions)
        .map(|i| generate_session(&config, i))
        .collect();
    let rt = runtime();
    for s in &generated {
        rt.block_on(write_session(
            &root,
            &s.info,
            &s.trials,
            WriteOptions {
                rows_per_group: 7,
                ..Default::default()
            },
        ))
        .unwrap();
    }
    generated
}

fn dense(trial: &TrialRecord, n_units: usize) -> Vec<f32> {
    let mut out = vec![0.0; trial.n_bins * n_units];
    for t in 0..trial.n_bins {
        for k in trial.indptr[t] as usize..trial.indptr[t + 1] as usize {
            out[t * n_units + trial.indices[k] as usize] += trial.counts[k] as f32;
        }
    }
    out
}

#[test]
fn write_then_read_gives_back_every_trial() {
    let generated = write_synthetic("memory://roundtrip/ds", 2);
    let dataset = Dataset::open("memory://roundtrip/ds").unwrap();
    assert_eq!(dataset.sessions.len(), 2);
    for g in &generated {
        let index = dataset
            .session_index(&g.info.eid)
            .expect("session found by eid");
        let session = &dataset.sessions[index];
        assert_eq!(session.regions, g.info.regions);
        assert_eq!(session.n_bins, 100);
        assert_eq!(session.uuids.as_deref(), Some(&g.info.uuids[..]));
        assert_eq!(session.depths.as_deref(), Some(&g.info.depths[..]));
        for split in Split::ALL {
            let trials = &g.trials[split as usize];
            assert_eq!(session.trials(split), trials.len());
            let rows: Vec<u32> = (0..trials.len() as u32).rev().collect();
            let batch = dataset.read_batch(index, split, &rows).unwrap();
            let (t, n) = (batch.n_bins, batch.n_units);
            for (i, &row) in rows.iter().enumerate() {
                let want = &trials[row as usize];
                assert_eq!(
                    &batch.spikes[i * t * n..(i + 1) * t * n],
                    &dense(want, n)[..]
                );
                let b = &batch.behaviour;
                assert_eq!(b.get(Behaviour::Choice).unwrap()[i], want.choice as f32);
                assert_eq!(b.get(Behaviour::Block).unwrap()[i], want.block as f32);
                assert_eq!(b.get(Behaviour::Reward).unwrap()[i], want.reward as f32);
                let whisker: Vec<f32> = want.whisker.iter().map(|&x| x as f32).collect();
                assert_eq!(
                    &b.get(Behaviour::Whisker).unwrap()[i * t..(i + 1) * t],
                    &whisker[..]
                );
                assert!(b.get(Behaviour::Wheel).is_some());
            }
        }
    }
}

#[test]
fn loader_follows_the_sampler_and_resumes_exactly() {
    write_synthetic("memory://loader/ds", 3);
    let dataset = Arc::new(Dataset::open("memory://loader/ds").unwrap());
    let sampler = Sampler::new(dataset.trial_counts(Split::Train), 4, 99, 0, 1).unwrap();
    let steps = sampler.steps_per_epoch();
    let prefetch = PrefetchConfig {
        depth: 5,
        threads: 3,
    };
    let mut loader = Loader::new(
        Arc::clone(&dataset),
        Split::Train,
        sampler.clone(),
        SamplerState::default(),
        prefetch,
    )
    .unwrap();
    let plan: Vec<_> = sampler
        .rank_plan(0)
        .into_iter()
        .chain(sampler.rank_plan(1))
        .collect();
    let mut seen = Vec::new();
    let mut saved = None;
    for (step, want) in plan.iter().enumerate().take(steps + 3) {
        if step == steps - 2 {
            saved = Some(loader.state());
        }
        let batch = loader.next_batch().unwrap();
        assert_eq!(batch.session, want.session, "step {step}");
        assert_eq!(batch.trials, want.trials, "step {step}");
        seen.push(batch);
    }
    assert_eq!(
        loader.state(),
        SamplerState {
            epoch: 1,
            position: 3
        }
    );
    // A new loader from the saved state continues with exactly the same batches, across
    // the epoch boundary.
    let saved = saved.unwrap();
    let mut resumed =
        Loader::new(Arc::clone(&dataset), Split::Train, sampler, saved, prefetch).unwrap();
    for want in &seen[steps - 2..] {
        assert_eq!(&resumed.next_batch().unwrap(), want);
    }
}

#[test]
fn ranks_of_one_world_read_disjoint_trials() {
    write_synthetic("memory://ranks/ds", 2);
    let dataset = Arc::new(Dataset::open("memory://ranks/ds").unwrap());
    let counts = dataset.trial_counts(Split::Train);
    let mut seen = std::collections::HashSet::new();
    let mut steps = Vec::new();
    for rank in 0..3 {
        let sampler = Sampler::new(counts.clone(), 3, 5, rank, 3).unwrap();
        steps.push(sampler.steps_per_epoch());
        let mut loader = Loader::new(
            Arc::clone(&dataset),
            Split::Train,
            sampler.clone(),
            SamplerState::default(),
            PrefetchConfig::default(),
        )
        .unwrap();
        for _ in 0..sampler.steps_per_epoch() {
            let batch = loader.next_batch().unwrap();
            for t in batch.trials {
                assert!(seen.insert((batch.session, t)));
            }
        }
    }
    assert!(steps.iter().all(|&s| s == steps[0] && s > 0));
}

#[test]
fn a_manifest_picks_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let generated = write_synthetic(root, 3);
    let chosen = &generated[1].info.eid;
    let manifest = dir.path().join("heldout.txt");
    std::fs::write(
        &manifest,
        format!("# held out\n\n{chosen}_aligned  # one session\n"),
    )
    .unwrap();
    let dataset = Dataset::open(manifest.to_str().unwrap()).unwrap();
    assert_eq!(dataset.sessions.len(), 1);
    assert_eq!(&dataset.sessions[0].eid, chosen);

    std::fs::write(&manifest, "missing_aligned\n").unwrap();
    let err = Dataset::open(manifest.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::Manifest { line: 1, .. }), "{err}");
}

// ---------------------------------------------------------------- bad input

/// A one-session dataset on disk whose first training trial is altered by `corrupt`.
fn dataset_with(
    corrupt: impl FnOnce(&mut SessionInfo, &mut TrialRecord),
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let mut session = generate_session(&small_config(1), 0);
    corrupt(&mut session.info, &mut session.trials[0][0]);
    runtime()
        .block_on(write_session(
            &Location::parse(&url).unwrap(),
            &session.info,
            &session.trials,
            // The Parquet file's own checks: the side-car writer would refuse the data.
            WriteOptions {
                sidecar: false,
                ..Default::default()
            },
        ))
        .unwrap();
    (dir, url)
}

/// Opens the dataset and reads every training trial; returns the first error.
fn first_error(url: &str) -> DataError {
    let dataset = match Dataset::open(url) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let n = dataset.sessions[0].trials(Split::Train) as u32;
    match dataset.read_batch(0, Split::Train, &(0..n).collect::<Vec<_>>()) {
        Ok(_) => panic!("corrupt data must not decode"),
        Err(e) => e,
    }
}

fn assert_row_error(err: DataError, field: &str, needle: &str) {
    let msg = err.to_string();
    match &err {
        DataError::InvalidRow {
            row, field: f, url, ..
        } => {
            assert_eq!(f, field, "{msg}");
            assert_eq!(*row, 0, "{msg}");
            assert!(url.ends_with("train-00000-of-00001.parquet"), "{msg}");
        }
        other => panic!("expected an invalid-row error, got {other:?}"),
    }
    assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
}

#[test]
fn indptr_of_the_wrong_length_is_reported() {
    let (_dir, url) = dataset_with(|_, t| {
        t.indptr.pop();
        *t.indptr.last_mut().unwrap() = t.counts.len() as i64;
    });
    assert_row_error(first_error(&url), "spikes_sparse_indptr", "n_bins + 1");
}

#[test]
fn unit_index_out_of_range_is_reported() {
    let (_dir, url) = dataset_with(|info, t| t.indices[0] = info.regions.len() as i64 + 3);
    assert_row_error(first_error(&url), "spikes_sparse_indices", "outside");
}

#[test]
fn negative_counts_are_reported() {
    let (_dir, url) = dataset_with(|_, t| t.counts[0] = -2);
    assert_row_error(first_error(&url), "spikes_sparse_data", "negative");
}

#[test]
fn indptr_that_does_not_add_up_is_reported() {
    let (_dir, url) = dataset_with(|_, t| *t.indptr.last_mut().unwrap() += 1);
    assert_row_error(
        first_error(&url),
        "spikes_sparse_indptr",
        "end at the number of values",
    );
}

#[test]
fn decreasing_indptr_is_reported() {
    let (_dir, url) = dataset_with(|_, t| {
        let k = t.indptr[50];
        t.indptr[50] = t.indptr[51] + 1;
        assert!(t.indptr[50] > k || t.indptr[51] + 1 > t.indptr[52]);
    });
    assert_row_error(first_error(&url), "spikes_sparse_indptr", "decreases");
}

#[test]
fn shape_inconsistent_across_rows_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let session = generate_session(&small_config(1), 0);
    let root = Location::parse(url).unwrap();
    let mut trials = session.trials[0].clone();
    // Row 5 claims 99 bins: its CSR is consistent with itself but not with row 0.
    let t = &mut trials[5];
    t.n_bins = 99;
    let keep = t.indptr[99] as usize;
    t.indptr.truncate(100);
    t.indices.truncate(keep);
    t.counts.truncate(keep);
    let rt = runtime();
    rt.block_on(write_session(
        &root,
        &session.info,
        &session.trials,
        WriteOptions::default(),
    ))
    .unwrap();
    rt.block_on(write_split(
        &root,
        &session.info,
        Split::Train,
        &trials,
        WriteOptions {
            sidecar: false,
            ..Default::default()
        },
    ))
    .unwrap();
    let err = first_error(url);
    match &err {
        DataError::InvalidRow { row: 5, field, .. } if field == "spikes_sparse_shape" => {}
        other => panic!("expected row 5's shape to be reported, got {other}"),
    }
}

#[test]
fn a_root_without_sessions_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "nothing here").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let err = Dataset::open(dir.path().join("empty").to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::NoSessions { .. }), "{err}");
    let err = Dataset::open(dir.path().join("does-not-exist").to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::NoSessions { .. }), "{err}");
}

fn session_file(dir: &std::path::Path, eid: &str, split: &str) -> std::path::PathBuf {
    let data = dir.join(format!("{eid}_aligned/data"));
    std::fs::create_dir_all(&data).unwrap();
    data.join(format!("{split}-00000-of-00001.parquet"))
}

#[test]
fn empty_truncated_and_foreign_files_are_reported() {
    let (dir, url) = dataset_with(|_, _| {});
    let eid = Dataset::open(&url).unwrap().sessions[0].eid.clone();
    let file = session_file(dir.path(), &eid, "train");
    let bytes = std::fs::read(&file).unwrap();

    for (name, content) in [
        ("empty", Vec::new()),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("not parquet", b"eid,spikes\n1,2\n".repeat(100)),
    ] {
        std::fs::write(&file, &content).unwrap();
        let err = Dataset::open(&url).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Parquet { .. }), "{name}: {msg}");
        assert!(
            msg.contains("train-00000-of-00001.parquet"),
            "{name}: {msg}"
        );
    }
}

#[test]
fn missing_and_mistyped_columns_are_reported() {
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let file = session_file(dir.path(), "x", "train");
    // A file with the layout's `eid` but spikes as a plain integer.
    let batch = RecordBatch::try_from_iter([
        ("eid", Arc::new(StringArray::from(vec!["x"])) as _),
        (
            "spikes_sparse_data",
            Arc::new(Int64Array::from(vec![1])) as _,
        ),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = Dataset::open(dir.path().to_str().unwrap()).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingColumn { column, .. } if column == "spikes_sparse_indices"),
        "{err}"
    );
}

#[test]
fn missing_behaviour_values_read_as_nan_and_inspect_counts_their_trials() {
    // One NaN inside trial 0's whisker trace and a NaN choice: both are missing values,
    // not errors (real recordings have gaps in video and wheel), and the reader keeps
    // them as NaN for the evaluation to leave out.
    let (_dir, url) = dataset_with(|_, trial| {
        trial.whisker[17] = f64::NAN;
        trial.choice = f64::NAN;
    });
    let dataset = Dataset::open(&url).unwrap();
    let batch = dataset.read_batch(0, Split::Train, &[0, 1]).unwrap();
    let whisker = batch.behaviour.get(Behaviour::Whisker).unwrap();
    let t = batch.n_bins;
    assert!(whisker[17].is_nan());
    assert!(whisker[..t].iter().filter(|x| x.is_nan()).count() == 1);
    assert!(whisker[t..].iter().all(|x| x.is_finite()));
    let choice = batch.behaviour.get(Behaviour::Choice).unwrap();
    assert!(choice[0].is_nan() && choice[1].is_finite());

    let report = mtm_dataloader::inspect::inspect(&url, |_| {}).unwrap();
    let session = &report.sessions[0];
    assert!(session.problems.is_empty(), "{:?}", session.problems);
    assert_eq!(
        session.behaviour_missing,
        vec![("choice", 1), ("whisker-motion-energy", 1)]
    );
}

// ---------------------------------------------------------------- compact side-cars

fn open(url: &str, sidecars: bool) -> Dataset {
    Dataset::open_with(
        url,
        &mtm_dataloader::OpenOptions {
            sidecars,
            ..Default::default()
        },
    )
    .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn sidecars_give_the_same_trials_as_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    write_synthetic(url, 2);
    let (fast, slow) = (open(url, true), open(url, false));
    let rt = runtime();
    for (index, session) in fast.sessions.iter().enumerate() {
        for split in Split::ALL {
            for (f, file) in session.files(split).iter().enumerate() {
                assert!(file.sidecar.is_some(), "{}", file.location.url());
                for g in 0..file.row_group_rows.len() {
                    let read = |from| {
                        rt.block_on(mtm_dataloader::session::read_group(
                            session, split, f, g, from,
                        ))
                        .unwrap()
                    };
                    let (a, b) = (
                        read(mtm_dataloader::GroupSource::Fastest),
                        read(mtm_dataloader::GroupSource::Parquet),
                    );
                    assert!(a.identical(&b), "{split} file {f} group {g}");
                    assert!(a.n_rows > 0 && !a.units.is_empty());
                }
            }
            let all: Vec<u32> = (0..session.trials(split) as u32).collect();
            let (x, y) = (
                fast.read_batch(index, split, &all).unwrap(),
                slow.read_batch(index, split, &all).unwrap(),
            );
            assert_eq!(x.spikes, y.spikes);
            for b in Behaviour::ALL {
                assert_eq!(
                    x.behaviour.get(b).map(bits),
                    y.behaviour.get(b).map(bits),
                    "{b:?}"
                );
            }
        }
    }
}

/// The side-car of the session's train file.
fn train_sidecar(dir: &std::path::Path, eid: &str) -> std::path::PathBuf {
    dir.join(format!("{eid}_aligned/mtm/train-00000-of-00001.arrow"))
}

#[test]
fn a_stale_sidecar_is_ignored_and_a_rewrite_without_one_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let session = write_synthetic(url, 1).remove(0);
    let car = train_sidecar(dir.path(), &session.info.eid);
    let old = std::fs::read(&car).unwrap();
    // Rewriting the train file without a side-car removes the old one...
    let fewer = session.trials[0][..10].to_vec();
    runtime()
        .block_on(write_split(
            &Location::parse(url).unwrap(),
            &session.info,
            Split::Train,
            &fewer,
            WriteOptions {
                sidecar: false,
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(!car.exists());
    // ...and one put back by hand is recognised as made from other contents.
    std::fs::write(&car, old).unwrap();
    let dataset = open(url, true);
    let train = &dataset.sessions[0].files(Split::Train)[0];
    assert!(train.sidecar.is_none());
    assert!(dataset.sessions[0].files(Split::Val)[0].sidecar.is_some());
    let batch = dataset
        .read_batch(0, Split::Train, &(0..10).collect::<Vec<_>>())
        .unwrap();
    let n = session.info.regions.len();
    for (i, trial) in fewer.iter().enumerate() {
        let per = trial.n_bins * n;
        assert_eq!(batch.spikes[i * per..(i + 1) * per], dense(trial, n)[..]);
    }
}

#[test]
fn a_corrupt_sidecar_names_its_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let session = write_synthetic(url, 1).remove(0);
    let n_units = session.info.regions.len();
    let dataset = open(url, false);
    let meta = &dataset.sessions[0];
    let file = &meta.files(Split::Train)[0];
    let rt = runtime();
    let mut groups: Vec<_> = (0..file.row_group_rows.len())
        .map(|g| {
            rt.block_on(mtm_dataloader::session::read_group(
                meta,
                Split::Train,
                0,
                g,
                mtm_dataloader::GroupSource::Parquet,
            ))
            .unwrap()
        })
        .collect();
    // Row 1 of the second group (row 8 of the file, 7 rows per group) names a unit past the end.
    let first = groups[1].nnz[1] as usize;
    groups[1].units[first] = n_units as u16;
    let bytes =
        mtm_dataloader::sidecar::encode(&groups, meta.n_bins, n_units, meta.behaviour, file.size)
            .unwrap();
    std::fs::write(train_sidecar(dir.path(), &session.info.eid), bytes).unwrap();
    let dataset = open(url, true);
    let err = dataset
        .read_batch(0, Split::Train, &[8])
        .expect_err("a unit index past the end must not decode");
    match &err {
        DataError::InvalidRow {
            url, row, field, ..
        } => {
            assert!(url.ends_with("mtm/train-00000-of-00001.arrow"), "{err}");
            assert_eq!((*row, field.as_str()), (8, "units"), "{err}");
        }
        other => panic!("expected an invalid-row error, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("outside 0..{n_units}")),
        "{err}"
    );
}
