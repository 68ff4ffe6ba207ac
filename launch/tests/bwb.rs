//! `mtm ingest bwb` as a user runs it against BrainWideBench's public bucket: session files
//! written by the real `temporaldata` package (by a program that also bins them with numpy),
//! served from an S3 server on 127.0.0.1 behind a front door where the public bucket refuses
//! signed requests and the private one refuses unsigned ones; ingested from the public
//! bucket into the private one; read back with pyarrow and compared with the numpy binning;
//! broken files named while the others are written; then the written dataset inspected and
//! trained on with no credentials at all.
#![cfg(feature = "bwb")]

use std::collections::BTreeMap;
use std::process::{Command, Output};

use mtm_tests::S3Server;
use serde_json::Value;

const PUBLIC: &str = "brain-wide-bench";
const PRIVATE: &str = "mine";

fn mtm(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mtm"));
    command.args(args).env("MTM_LOG", "warn");
    // Nothing from the machine's own AWS set-up may leak in.
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SKIP_SIGNATURE",
        "AWS_PROFILE",
        mtm_dataloader::store::ANONYMOUS_BUCKETS_VAR,
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("mtm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The endpoint's environment: credentials only when `keys`, the public bucket anonymous
/// only when `anonymous`.
fn env(endpoint: &str, keys: bool, anonymous: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    if keys {
        env.push(("AWS_ACCESS_KEY_ID", "test".into()));
        env.push(("AWS_SECRET_ACCESS_KEY", "test".into()));
    }
    if anonymous {
        env.push((mtm_dataloader::store::ANONYMOUS_BUCKETS_VAR, PUBLIC.into()));
    }
    env
}

#[test]
fn from_the_public_bucket_to_a_private_one_and_back_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let expected: Value = serde_json::from_str(&mtm_tests::run_python(
        "make_bwb.py",
        &[bucket.to_str().unwrap(), "--bad"],
    ))
    .unwrap();
    let server = S3Server::start(PUBLIC);
    server.create_bucket(PRIVATE);
    server.upload(&bucket, PUBLIC, true);
    let gate = server.public_gate(&[PUBLIC]);
    let out = format!("s3://{PRIVATE}/aligned");
    let ingest = |env: &[(&str, String)]| {
        mtm(
            &[
                "ingest",
                "bwb",
                "--from",
                "s3://brain-wide-bench",
                "--split",
                "pretrain",
                "--units",
                "selected",
                "--out",
                &out,
                "--jobs",
                "2",
            ],
            env,
        )
    };

    // Signed requests to the public bucket are refused: the front door can tell.
    let o = ingest(&env(&gate.endpoint, true, false));
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("s3://brain-wide-bench") && err.contains("AccessDenied"),
        "{err}"
    );

    // Anonymous for the public bucket, signed for the private one.
    let o = ingest(&env(&gate.endpoint, true, true));
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("2 of 4 sessions written to {out}")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("2 sessions listed in {out}/bwb-pretrain.txt")),
        "{stdout}"
    );
    assert!(
        stderr.contains("4 session files under s3://brain-wide-bench"),
        "{stderr}"
    );
    for (name, why) in [
        ("not-hdf5.h5", "not a readable HDF5 file"),
        (
            "00000000-0000-0000-0000-00000000dead.h5",
            "no group /spikes",
        ),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not named:\n{stderr}"));
        assert!(line.contains(why), "{line}");
    }

    // pyarrow reads what was written, and it is what numpy binned.
    let local = dir.path().join("downloaded");
    server.download(&format!("{PRIVATE}/aligned"), &local);
    let ours: BTreeMap<String, Value> = serde_json::from_str(&mtm_tests::run_python(
        "read_ours.py",
        &[local.to_str().unwrap()],
    ))
    .unwrap();
    let pretrain: Vec<&String> = expected
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["kind"] == "pretrain")
        .map(|(eid, _)| eid)
        .collect();
    assert_eq!(ours.keys().collect::<Vec<_>>().len(), 2);
    for eid in pretrain {
        let got = &ours[eid.as_str()];
        let want = &expected[eid.as_str()];
        for (s, split) in ["train", "val", "test"].into_iter().enumerate() {
            let trials: Vec<&Value> = want["trials"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["split"] == s)
                .collect();
            let sums: Vec<u64> = trials
                .iter()
                .map(|t| {
                    t["counts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|row| row.as_array().unwrap())
                        .map(|c| c.as_u64().unwrap())
                        .sum()
                })
                .collect();
            let got_sums: Vec<u64> = got[split]["trial_sums"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(got_sums, sums, "{eid} {split}: spikes per trial");
            let choices: Vec<&Value> = trials.iter().map(|t| &t["choice"]).collect();
            let got_choices: Vec<&Value> =
                got[split]["choice"].as_array().unwrap().iter().collect();
            assert_eq!(got_choices, choices, "{eid} {split}: choice");
        }
        let meta = &got["metadata"];
        assert_eq!(meta["bwb.file"], format!("{eid}.h5"));
        assert_eq!(meta["bwb.provenance.pipeline_commit"], "abc123");
        assert_eq!(meta["bwb.brainset.unit_filtering"], "selected_units");
    }

    // The dataset, published in the public bucket, is inspected and trained on by someone
    // with no credentials.
    let published = dir.path().join("published");
    server.download(&format!("{PRIVATE}/aligned"), &published);
    server.upload(&published, &format!("{PUBLIC}/derived"), true);
    let anonymous = env(&gate.endpoint, false, true);
    let o = mtm(
        &["data", "inspect", "s3://brain-wide-bench/derived"],
        &anonymous,
    );
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("2 sessions"), "{stdout}");
    // The empty test splits (BWB's pretraining files have no test domain) have side-cars
    // that agree with their sessions.
    assert!(
        stdout.contains("compact side-cars: 6 of 6 split files"),
        "{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");

    // BWB's pretraining sessions have no test trials: nothing is evaluated after training,
    // and the run says so and succeeds.
    let config = mtm_tests::TestRun::new(dir.path())
        .with(|c| {
            c.data.synthesize = None;
            // The manifest the ingest wrote: exactly the pretraining sessions.
            c.data.root = "s3://brain-wide-bench/derived/bwb-pretrain.txt".into();
            c.train.steps = 2;
            c.train.validate_every = 2;
            c.train.checkpoint_every = 2;
        })
        .write(&dir.path().join("bwb.toml"));
    let o = mtm(&["train", "--config", config.to_str().unwrap()], &anonymous);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let log = format!("{stdout}{stderr}");
    assert!(
        log.contains("on 2 sessions of s3://brain-wide-bench/derived/bwb-pretrain.txt")
            && log.contains("step 2: validation loss"),
        "{log}"
    );
    assert!(log.contains("nothing to evaluate after training"), "{log}");
    let checkpoint = dir.path().join("run/checkpoints/step-00000002");
    assert!(checkpoint.is_dir(), "{log}");
}
