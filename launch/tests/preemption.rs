//! Preemption as Slurm does it: a signal during training leaves a checkpoint, the process
//! exits with status 75, and the same command started again resumes exactly; under
//! `mpirun`, a signal to one rank stops every rank after the same step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(dir: &Path) -> PathBuf {
    mtm_tests::TestRun::new(dir)
        .sessions(2, 6, (20, 30), (150, 150), (2, 3))
        .model(32, 2)
        .with(|c| {
            c.seed = 3;
            c.model.dropout = 0.2;
            c.train.steps = 60;
            c.train.lr = 2e-3;
            c.train.checkpoint_every = 0;
            c.train.keep_checkpoints = 0;
            c.eval.after_training = false;
        })
        .write(&dir.join("run.toml"))
}

fn final_model(run: &Path) -> BTreeMap<String, Vec<u8>> {
    mtm_tests::safetensors_bytes(&run.join("checkpoints/step-00000060/model.safetensors"))
}

/// Starts `command`, waits until the run has logged `after` steps, signals `target(pid)`
/// with SIGUSR1, and returns the exit status and stderr.
fn interrupt(mut command: Command, run: &Path, target: impl Fn(u32) -> u32) -> (i32, String) {
    let stderr_path = run.with_extension("stderr");
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("starts");
    let metrics = run.join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.lines().count() < 5) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training did not start: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = target(child.id());
    let status = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&stderr_path).unwrap(),
    )
}

fn checkpoint_steps(run: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort();
    steps
}

#[test]
fn a_signal_checkpoints_and_the_same_command_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mtm = env!("CARGO_BIN_EXE_mtm");
    let straight = dir.path().join("straight");
    let run = |out: &Path| {
        let mut c = Command::new(mtm);
        c.args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--set",
            &format!("out_dir={}", out.display()),
        ])
        .env("MTM_LOG", "warn")
        .env("RAYON_NUM_THREADS", "1");
        c
    };
    let o = run(&straight).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let interrupted = dir.path().join("interrupted");
    let (code, stderr) = interrupt(run(&interrupted), &interrupted, |pid| pid);
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("stopping on request"), "{stderr}");
    let steps = checkpoint_steps(&interrupted);
    assert_eq!(steps.len(), 1, "one checkpoint, at the stop: {steps:?}");
    assert!(steps[0] < 60, "stopped at {steps:?}");

    // The same command again: resumes from the checkpoint, ends like the straight run.
    let o = run(&interrupted).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert!(
        final_model(&straight) == final_model(&interrupted),
        "the resumed run differs from the uninterrupted one"
    );
}

// Needs the `mpi` feature, as the README's test command builds mtm.
#[cfg(feature = "mpi")]
#[test]
fn a_signal_to_one_rank_stops_every_rank_after_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let run = dir.path().join("run");
    let mut command = Command::new("mpirun");
    command.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        "2",
        "-x",
        "RAYON_NUM_THREADS=1",
        "-x",
        "MTM_LOG=warn",
        env!("CARGO_BIN_EXE_mtm"),
        "train",
        "--config",
        config.to_str().unwrap(),
    ]);
    // Only rank 1 is told; rank 0 learns it through the step's reduction.
    let (code, stderr) = interrupt(command, &run, |mpirun| {
        mtm_tests::mpirun_rank_pid(mpirun, 1).expect("rank 1 among mpirun's children")
    });
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("stopping on request"), "{stderr}");
    let steps = checkpoint_steps(&run);
    assert_eq!(steps.len(), 1, "{steps:?}\n{stderr}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join(format!("checkpoints/step-{:08}/state.json", steps[0])))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], steps[0]);
    assert_eq!(state["world_size"], 2);
}

/// Starts `command` (stdout and stderr to a file), waits until the file contains
/// `marker`, sends SIGINT and returns how the process ended and how long after the signal.
fn ctrl_c_after(
    mut command: Command,
    log: &Path,
    marker: &str,
) -> (std::process::ExitStatus, Duration, String) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starts");
    let started = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(marker)
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{marker:?} never appeared: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before {marker:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, took) = ctrl_c(&mut child);
    (status, took, std::fs::read_to_string(log).unwrap())
}

/// Sends SIGINT to `child` and waits for it: how it ended and how long after the signal.
fn ctrl_c(child: &mut std::process::Child) -> (std::process::ExitStatus, Duration) {
    let signalled = Instant::now();
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    (child.wait().unwrap(), signalled.elapsed())
}

#[test]
fn ctrl_c_during_evaluation_stops_at_once_and_writes_no_report() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let run = dir.path().join("run");
    // A few steps, then an evaluation made long on purpose: one trial copy per pass.
    let slow_eval = [
        "--set",
        "train.steps=4",
        "--set",
        "eval.after_training=true",
        "--set",
        "eval.rows_per_pass=1",
    ];
    let mut train = Command::new(env!("CARGO_BIN_EXE_mtm"));
    train.args(["train", "--config", config.to_str().unwrap()]);
    train.args(slow_eval);
    let (status, took, log) = ctrl_c_after(train, &dir.path().join("train.log"), "run written to");
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} after the signal"
    );
    assert!(!run.join("eval-test.json").exists());

    // `mtm eval` alone: the default action of SIGINT.
    let mut eval = Command::new(env!("CARGO_BIN_EXE_mtm"));
    eval.args([
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--rows-per-pass",
        "1",
    ]);
    eval.args(["--out", dir.path().join("eval.json").to_str().unwrap()]);
    let (status, took, log) = ctrl_c_after(eval, &dir.path().join("eval.log"), "evaluating");
    assert!(
        !status.success() && (status.signal() == Some(2) || status.code() == Some(130)),
        "{status:?}: {log}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} after the signal"
    );
    assert!(!dir.path().join("eval.json").exists());
}

#[test]
fn ctrl_c_during_synth_leaves_no_dataset_that_looks_whole() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtm"))
        .args(["synth", "--out", out.to_str().unwrap(), "--sessions", "40"])
        .args(["--units", "300..300", "--trials", "400..400"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = dir.path().join("data.partial");
    let started = Instant::now();
    // Wait for the first session folder inside the staging folder.
    while std::fs::read_dir(&staging).map_or(true, |d| d.count() == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "synth did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, took) = ctrl_c(&mut child);
    assert!(took < Duration::from_secs(5));
    assert!(
        !status.success() && status.signal() == Some(2),
        "{status:?}"
    );
    assert!(!out.exists(), "an interrupted synth left {}", out.display());

    // A run that generates its data there starts over and trains on a whole dataset.
    let config = config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("data").display().to_string(),
        out.to_str().unwrap(),
    );
    std::fs::write(&config, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mtm"))
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--set",
            "train.steps=2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("synthetic.json").is_file() && !staging.exists());
}

/// Killed by SIGINT (the default action), or exited with 130 after handling it.
fn stopped_by_ctrl_c(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    !status.success() && (status.signal() == Some(2) || status.code() == Some(130))
}

#[test]
fn ctrl_c_during_finetune_evaluation_stops_at_once_and_writes_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut finetune = Command::new(env!("CARGO_BIN_EXE_mtm"));
    finetune.args([
        "finetune",
        "--config",
        config.to_str().unwrap(),
        "--scratch",
    ]);
    // A few steps, then an evaluation made long on purpose: one trial copy per pass.
    finetune.args(["--set", "train.steps=3", "--set", "eval.rows_per_pass=1"]);
    let log = dir.path().join("finetune.log");
    let (status, took, log) = ctrl_c_after(finetune, &log, "evaluating on the test split");
    assert!(stopped_by_ctrl_c(status), "{status:?}: {log}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} after the signal"
    );
    assert!(!dir.path().join("run/finetune-report.json").exists());
}

#[test]
fn ctrl_c_during_a_benchmark_stops_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut bench = Command::new(env!("CARGO_BIN_EXE_mtm"));
    // The paper-sized step takes seconds; a thousand of them would take an hour.
    bench.args(["bench", "step", "--steps", "1000"]);
    let log = dir.path().join("bench.log");
    let (status, took, log) = ctrl_c_after(bench, &log, "parameters, B=");
    assert!(stopped_by_ctrl_c(status), "{status:?}: {log}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} after the signal"
    );
}

#[test]
fn ctrl_c_during_ingest_leaves_no_session_that_looks_whole() {
    let dir = tempfile::tempdir().unwrap();
    let made = mtm_tests::run_python(
        "make_alf.py",
        &[
            dir.path().to_str().unwrap(),
            "--units",
            "120",
            "--trials",
            "400",
            "--duration",
            "2000",
        ],
    );
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    let folder = made["folder"].as_str().unwrap();
    let out = dir.path().join("dataset");
    let mut ingest = Command::new(env!("CARGO_BIN_EXE_mtm"));
    ingest.args([
        "ingest",
        "alf",
        "--jobs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    for i in 0..40 {
        ingest.args([
            "--session",
            &format!("00000000-0000-4000-8000-{i:012}={folder}"),
        ]);
    }
    let mut child = ingest
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a session is being written (its staging folder exists).
    let started = Instant::now();
    let writing = || {
        std::fs::read_dir(&out).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
        })
    };
    while !writing() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "ingest never wrote"
        );
        assert!(child.try_wait().unwrap().is_none(), "ingest ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, took) = ctrl_c(&mut child);
    assert!(took < Duration::from_secs(5));
    assert!(stopped_by_ctrl_c(status), "{status:?}");
    // Every session folder that looks like one holds all three splits.
    let mut whole = 0;
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("_aligned") {
            for split in ["train", "val", "test"] {
                let file = entry
                    .path()
                    .join(format!("data/{split}-00000-of-00001.parquet"));
                assert!(
                    file.is_file(),
                    "{name} has no {split} split after the signal"
                );
            }
            whole += 1;
        }
    }
    assert!(whole < 40, "the ingest had finished before the signal");
}
