//! The `mtm` binary as a user runs it: synthetic data, inspection, errors and exit codes,
//! local disk and a real S3-compatible server on 127.0.0.1.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mtm_tests::S3Server;

fn mtm(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mtm"));
    command.args(args).env("MTM_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("mtm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SMALL: [&str; 8] = [
    "--sessions",
    "2",
    "--units",
    "30..60",
    "--trials",
    "40..60",
    "--seed",
    "9",
];

fn synth(out: &str, env: &[(&str, String)]) {
    let mut args = vec!["synth", "--out", out];
    args.extend(SMALL);
    let o = mtm(&args, env);
    assert!(o.status.success(), "synth failed: {}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("wrote 2 sessions"),
        "{}",
        text(&o.stdout)
    );
}

/// The inspect table without its first line (which names the dataset's location).
fn table(output: &Output) -> String {
    text(&output.stdout)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn synth_then_inspect_locally() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    synth(root, &[]);
    let o = mtm(&["data", "inspect", root], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("2 sessions"), "{out}");
    // Session rows start with their eid (a UUID).
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.len() == 36 && w.matches('-').count() == 4)
        })
        .collect();
    assert_eq!(rows.len(), 2, "{out}");

    let o = mtm(&["data", "inspect", root, "--json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for s in report["sessions"].as_array().unwrap() {
        let rate = s["mean_rate_hz"].as_f64().unwrap();
        assert!((1.0..40.0).contains(&rate), "{rate}");
        assert!(s["problems"].as_array().unwrap().is_empty());
    }
}

#[test]
fn synth_is_deterministic_for_a_seed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth(a.path().to_str().unwrap(), &[]);
    synth(b.path().to_str().unwrap(), &[]);
    let ta = table(&mtm(&["data", "inspect", a.path().to_str().unwrap()], &[]));
    let tb = table(&mtm(&["data", "inspect", b.path().to_str().unwrap()], &[]));
    assert_eq!(ta, tb);
}

#[test]
fn inspect_reports_a_broken_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    synth(root, &[]);
    let victim = mtm_tests::walk(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("val-00000-of-00001.parquet"))
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() - 100]).unwrap();
    let o = mtm(&["data", "inspect", root], &[]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("1 problem(s)"), "{err}");
    assert!(
        err.contains(&*victim.to_string_lossy()) && err.contains("not a readable Parquet file"),
        "{err}"
    );
    // The healthy session is still listed.
    assert!(
        text(&o.stdout).contains("2 sessions"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn sidecars_are_written_for_a_dataset_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    synth(root, &[]);
    let before = table(&mtm(&["data", "inspect", root], &[]));
    let folders: Vec<_> = mtm_tests::walk(dir.path())
        .into_iter()
        .filter_map(|p| p.parent().map(|d| d.to_path_buf()))
        .filter(|d| d.ends_with("mtm"))
        .collect();
    assert!(!folders.is_empty());
    for folder in &folders {
        let _ = std::fs::remove_dir_all(folder);
    }
    let o = mtm(&["data", "inspect", root], &[]);
    assert!(
        text(&o.stdout).contains("compact side-cars: 0 of 6 split files (`mtm data sidecar URL`"),
        "{}",
        text(&o.stdout)
    );
    let o = mtm(&["data", "sidecar", root], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("wrote 6 side-cars"),
        "{}",
        text(&o.stdout)
    );
    let after = mtm(&["data", "inspect", root], &[]);
    assert!(after.status.success(), "{}", text(&after.stderr));
    assert!(
        text(&after.stdout).contains("compact side-cars: 6 of 6 split files (each checked"),
        "{}",
        text(&after.stdout)
    );
    // The table is the same whichever copy is read.
    assert_eq!(before, table(&after));
}

#[test]
fn an_empty_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = mtm(&["data", "inspect", dir.path().to_str().unwrap()], &[]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("no sessions found") && err.contains(dir.path().to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_explained() {
    let o = mtm(&["synth", "--out", "/tmp/x", "--units", "900..300"], &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("units"), "{}", text(&o.stderr));
    let o = mtm(&["data", "inspect", "ftp://host/data"], &[]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unsupported scheme"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn s3_round_trip_against_a_real_server() {
    let server = S3Server::start("ibl");
    let env = server.env();
    synth("s3://ibl/aligned", &env);
    let remote = mtm(&["data", "inspect", "s3://ibl/aligned"], &env);
    assert!(remote.status.success(), "{}", text(&remote.stderr));
    // synth wrote a side-car per split file, and inspect checked each against its Parquet.
    assert!(
        text(&remote.stdout).contains("compact side-cars: 6 of 6 split files (each checked"),
        "{}",
        text(&remote.stdout)
    );

    // The same seed written locally gives the same table.
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path().to_str().unwrap(), &[]);
    let local = mtm(&["data", "inspect", dir.path().to_str().unwrap()], &[]);
    assert_eq!(table(&remote), table(&local));

    // Batches through the prefetching loader, over S3.
    let o = mtm(
        &[
            "bench",
            "data",
            "s3://ibl/aligned",
            "--passes",
            "1",
            "--batch-size",
            "4",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("cold: fetch + side-car decode")
            && out.contains("cold side-car / cold Parquet"),
        "{out}"
    );

    // A bucket that does not exist is a storage error naming the URL.
    let o = mtm(&["data", "inspect", "s3://no-such-bucket/x"], &env);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("s3://no-such-bucket/x") && err.contains("storage error"),
        "{err}"
    );
}

#[test]
fn an_unreachable_store_fails_fast_with_the_url() {
    let port = mtm_tests::free_port();
    let env = mtm_tests::s3_env(&format!("http://127.0.0.1:{port}"));
    let start = Instant::now();
    let o = mtm(&["data", "inspect", "s3://bucket/data"], &env);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("s3://bucket/data") && err.contains("storage error"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

/// A tiny run: one small synthetic session, a small model, a few steps.
fn tiny_config(dir: &std::path::Path) -> std::path::PathBuf {
    mtm_tests::TestRun::new(dir)
        .with(|c| c.train.checkpoint_every = 2)
        .write(&dir.join("tiny.toml"))
}

#[test]
fn train_then_eval_and_an_outside_scorer_agrees_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let config = config.to_str().unwrap();
    let o = mtm(&["train", "--config", config], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    for column in [
        "co-smooth",
        "forward",
        "intra",
        "inter",
        "choice",
        "whisker",
    ] {
        assert!(table.contains(column), "{column} missing from\n{table}");
    }
    let run = dir.path().join("run");
    for file in [
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "eval-test.json",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    // The pictures: training curves, and each session's rasters and metrics.
    let eid = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .find_map(|name| name.strip_suffix("_aligned").map(str::to_string))
        .expect("a session folder");
    for picture in ["loss", &format!("{eid}/rasters"), &format!("{eid}/metrics")] {
        for ext in ["svg", "png"] {
            let path = run.join("plots").join(format!("{picture}.{ext}"));
            assert!(path.is_file(), "{} missing", path.display());
        }
    }
    // `mtm plot` redraws the curves from metrics.jsonl.
    std::fs::remove_file(run.join("plots/loss.svg")).unwrap();
    let o = mtm(&["plot", run.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("loss.svg") && run.join("plots/loss.svg").is_file());
    let rasters = std::fs::read_to_string(run.join(format!("plots/{eid}/rasters.svg"))).unwrap();
    for text in [
        "observed",
        "inter-region masking",
        "intra-region masking",
        "rate (Hz)",
    ] {
        assert!(rasters.contains(text), "rasters.svg lacks {text:?}");
    }
    // The report reads back as the typed report the sweep and the model card use.
    let report: mtm_trainer::report::Report =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-test.json")).unwrap())
            .unwrap();
    assert_eq!(report.sessions.len(), 1);
    assert!(
        report
            .mean_of(mtm_trainer::config::Task::CoSmooth)
            .is_some()
    );
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(run.join("eval-test.json")).unwrap()
        )
        .unwrap(),
        "nothing lost reading it back"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        5,
        "a header and one line per step"
    );

    // A second `train` of another run into the same folder refuses rather than mixing
    // runs; the same run started again continues from its checkpoint (here: nothing left).
    let o = mtm(
        &[
            "train",
            "--config",
            config,
            "--set",
            "masking.scheme=temporal",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already holds a run with another masking"),
        "{}",
        text(&o.stderr)
    );
    let o = mtm(&["train", "--config", config, "--no-eval"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("resuming from"),
        "{}",
        text(&o.stderr)
    );

    // Resuming with more steps continues from the last checkpoint.
    let o = mtm(
        &[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--set",
            "train.steps=6",
            "--no-eval",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("resuming at step 4"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        run.join("checkpoints/step-00000006/model.safetensors")
            .is_file()
    );

    let preds = dir.path().join("preds");
    let report = dir.path().join("report.json");
    let o = mtm(
        &[
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--tasks",
            "co-smooth,forward,intra,inter",
            "--save-predictions",
            preds.to_str().unwrap(),
            "--plots",
            dir.path().join("figures").to_str().unwrap(),
            "--out",
            report.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        dir.path()
            .join(format!("figures/{eid}/rasters.png"))
            .is_file()
    );
    let scorer = mtm_tests::run_python(
        "score_predictions.py",
        &[preds.to_str().unwrap(), report.to_str().unwrap()],
    );
    assert!(scorer.contains("checked 4 task results"), "{scorer}");
}

#[test]
fn config_mistakes_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let o = mtm(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--set",
            "train.stpes=3",
        ],
        &[],
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("stpes") && err.contains("tiny.toml"), "{err}");
    let o = mtm(&["train"], &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--config"), "{}", text(&o.stderr));
}
