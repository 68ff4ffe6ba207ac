//! BrainWideBench's suite TS2 as a user runs it: evaluation sessions written by the real
//! `temporaldata` package (one with BWB's hold-out columns, one without, so that mtm applies
//! BWB's hash rule itself), ingested with BWB's splits and trained on under two seeds; then
//! read from a public bucket on a local S3 server by `mtm export-predictions --bwb` and
//! `mtm eval --protocol bwb`. Ground truth is built from the same files by a separate
//! program on `temporaldata` (`tests/python/bwb_ts2_truth.py`), and the submission is
//! scored by BWB's own scorer (`ibl_bwb_eval` 0.1.0, which needs torch, in the interpreter
//! named by MTM_BWB_EVAL_PYTHON, by default `~/.cache/mtm-bwb-eval/bin/python`, where
//! `.ci/run` installs it). Its bits per spike and D² must equal mtm's to 1e-6.
#![cfg(feature = "bwb")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mtm_tests::S3Server;
use serde_json::Value;

const PUBLIC: &str = "brain-wide-bench";
const LABEL: &str = "mtm-test";

fn mtm(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mtm"));
    command.args(args).env("MTM_LOG", "warn");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SKIP_SIGNATURE",
        "AWS_PROFILE",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("mtm runs")
}

fn ok(o: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{what} failed: {text}");
    text
}

/// The interpreter with `ibl_bwb_eval` (and torch).
fn scorer_python() -> PathBuf {
    let path = std::env::var_os("MTM_BWB_EVAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/mtm-bwb-eval/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: BWB's scorer runs there (python3 -m venv ~/.cache/mtm-bwb-eval && \
         ~/.cache/mtm-bwb-eval/bin/pip install ibl-bwb-eval==0.1.0, as .ci/run does), or name \
         another interpreter in MTM_BWB_EVAL_PYTHON",
        path.display()
    );
    path
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_ts2_submission_scores_in_bwbs_scorer_as_mtm_scores_it() {
    let python = scorer_python();
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    mtm_tests::run_python(
        "make_bwb.py",
        &[
            bucket.to_str().unwrap(),
            "--sessions",
            "1",
            "--eval-sessions",
            "2",
            "--units",
            "12",
            "--trials",
            "60",
        ],
    );
    let eval_dir = bucket.join("selected_units/ibl_brain_wide_bench_2026/eval");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&eval_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);

    // Both sets ingested into one root (one manifest each), the evaluation sessions with
    // BWB's own splits. Seed 43: a model trained on the evaluation sessions themselves.
    // Seed 44: as the README goes, pretrained on the pretraining session, then fine-tuned
    // on each evaluation session (`mtm finetune`, one model per session).
    let data = dir.path().join("data");
    for part in ["eval", "pretrain"] {
        ok(
            mtm(
                &[
                    "ingest",
                    "bwb",
                    "--from",
                    bucket.to_str().unwrap(),
                    "--split",
                    part,
                    "--out",
                    data.to_str().unwrap(),
                ],
                &[],
            ),
            "ingest",
        );
    }
    let run = |name: &str, manifest: &str, seed: u64| {
        let out = dir.path().join(name);
        let config = mtm_tests::TestRun::new(dir.path())
            .with(|c| {
                c.data.root = data.join(manifest).display().to_string();
                c.data.synthesize = None;
                c.out_dir = out.clone();
                c.seed = seed;
                c.train.steps = 30;
                c.train.validate_every = 30;
                c.train.checkpoint_every = 30;
                c.eval.after_training = false;
            })
            .write(&dir.path().join(format!("{name}.toml")));
        (out, config)
    };
    let (trained, config) = run("run-43", "bwb-eval.txt", 43);
    ok(
        mtm(&["train", "--config", config.to_str().unwrap()], &[]),
        "train",
    );
    let (pretrained, config) = run("pretrain", "bwb-pretrain.txt", 1);
    ok(
        mtm(&["train", "--config", config.to_str().unwrap()], &[]),
        "pretrain",
    );
    let (finetuned, config) = run("finetune-44", "bwb-eval.txt", 44);
    ok(
        mtm(
            &[
                "finetune",
                "--config",
                config.to_str().unwrap(),
                "--checkpoint",
                pretrained.to_str().unwrap(),
                "--set",
                "train.steps=10",
            ],
            &[],
        ),
        "finetune",
    );
    let runs = [trained, finetuned];

    // The files are read from the public bucket without credentials.
    let server = S3Server::start(PUBLIC);
    server.upload(&bucket, PUBLIC, true);
    let gate = server.public_gate(&[PUBLIC]);
    let env = vec![
        ("AWS_ENDPOINT_URL", gate.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        (
            mtm_dataloader::store::ANONYMOUS_BUCKETS_VAR,
            PUBLIC.to_string(),
        ),
    ];
    let from = format!("s3://{PUBLIC}");
    let submission = dir.path().join("submission");
    let log = ok(
        mtm(
            &[
                "export-predictions",
                "--bwb",
                submission.to_str().unwrap(),
                "--label",
                LABEL,
                "--checkpoint",
                runs[0].to_str().unwrap(),
                "--checkpoint",
                runs[1].to_str().unwrap(),
                "--from",
                &from,
                "--windows-per-pass",
                "100",
            ],
            &env,
        ),
        "export-predictions",
    );
    assert!(log.contains("8 files written"), "{log}");
    let mut reports = Vec::new();
    for (run, seed) in runs.iter().zip([43, 44]) {
        let out = dir.path().join(format!("ts2-{seed}.json"));
        ok(
            mtm(
                &[
                    "eval",
                    "--protocol",
                    "bwb",
                    "--checkpoint",
                    run.to_str().unwrap(),
                    "--data",
                    &from,
                    "--out",
                    out.to_str().unwrap(),
                ],
                &env,
            ),
            "eval --protocol bwb",
        );
        let report = json_file(&out);
        assert_eq!(report["seed"], seed);
        reports.push(report);
    }

    // Ground truth from the same files, and BWB's scorer.
    let gt = dir.path().join("gt");
    let mut args = vec![gt.to_str().unwrap().to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let truth: Value =
        serde_json::from_str(&mtm_tests::run_python("bwb_ts2_truth.py", &args)).unwrap();
    let pred_dir = submission.join(LABEL);
    let scored = Command::new(&python)
        .arg(mtm_tests::script("bwb_score.py"))
        .args([&pred_dir, &gt])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_str(&ok(scored, "bwb_score.py")).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8, "2 sessions x 2 tasks x 2 seeds: {rows:?}");
    for row in rows {
        let (task, eid, seed) = (
            row["task"].as_str().unwrap(),
            row["recording_id"].as_str().unwrap(),
            row["seed"].as_u64().unwrap(),
        );
        let what = format!("{eid} {task} seed {seed}");
        // Every ground-truth window is predicted, and nothing else (the scorer would
        // silently score only the windows both hold).
        let w = &row["windows"];
        assert_eq!(w["pred"], w["gt"], "{what}: {w}");
        assert_eq!(w["common"], w["gt"], "{what}: {w}");
        assert_eq!(w["gt"], truth[eid]["windows"], "{what}");
        assert_eq!(row["shape"], row["gt_shape"], "{what}");
        assert_eq!(row["dtypes"]["predictions"], "float16", "{what}");
        assert_eq!(row["dtypes"]["window_timestamps"], "float64", "{what}");
        assert_eq!(row["dtypes"]["unit_ids"], "uint8", "{what}");
        assert_eq!(row["version"], "0.1.0", "{what}");
        let meta = &row["metadata"];
        assert_eq!(meta["unit_filtering"], "selected_units", "{what}");
        assert_eq!(meta["dataset_version"], "0.1.0", "{what}");
        assert_eq!(meta["bin_size"], "0.02", "{what}");
        assert_eq!(meta["context_window"], "1.0", "{what}");
        let ids = mtm_tests::json::strings(&row["unit_ids"]);
        if task == "ts2-co_smoothing" {
            assert_eq!(
                ids,
                mtm_tests::json::strings(&truth[eid]["held_out"]),
                "{what}"
            );
        } else {
            assert_eq!(ids.len(), 12, "{what}");
        }
        // The scorer's numbers are mtm's.
        let report = &reports[(seed - 43) as usize];
        let session = report["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["eid"] == eid)
            .unwrap_or_else(|| panic!("{what}: not in mtm's report"));
        let ours = session["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| format!("ts2-{}", t["task"].as_str().unwrap()) == task)
            .unwrap();
        for metric in ["poisson_d2", "bps"] {
            let (theirs, mine) = (
                row["scores"][metric].as_f64().unwrap(),
                ours[metric].as_f64().unwrap(),
            );
            eprintln!("{what} {metric}: BWB's scorer {theirs:.9}, mtm {mine:.9}");
            assert!(theirs.is_finite(), "{what} {metric}: {theirs}");
            assert!(
                (theirs - mine).abs() <= 1e-6,
                "{what} {metric}: BWB's scorer {theirs}, mtm {mine}"
            );
        }
    }
    // The scorer's own command line reads the same submission without an error.
    let cli = Command::new(&python)
        .args(["-m", "ibl_bwb_eval.scoring.ts2", "--pred_dir"])
        .arg(&pred_dir)
        .arg("--gt_dir")
        .arg(&gt)
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    let table = ok(cli, "python -m ibl_bwb_eval.scoring.ts2");
    assert!(table.contains("TS2 Scoring Results"), "{table}");
    assert!(
        !table.contains("Error") && !table.contains("not found"),
        "{table}"
    );
    drop(gate);
}
