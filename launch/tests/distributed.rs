//! Data-parallel training as users start it: real processes under Open MPI's `mpirun`.
//!
//! They need mtm built with the `mpi` feature, as the README's test command builds it
//! (`--features mtm-launch/mpi`), and `mpirun` installed (`.ci/run` installs Debian's
//! `openmpi-bin`); a missing `mpirun` fails these tests with that message rather than
//! skipping them.
#![cfg(feature = "mpi")]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `mpirun -np N mtm ARGS` as CI runs it (root, 2 cores), one compute thread per rank.
fn mpirun(np: usize, args: &[&str], log: &str) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &np.to_string(),
            "-x",
            "RAYON_NUM_THREADS=1",
            "-x",
            &format!("MTM_LOG={log}"),
            "-x",
            "NO_COLOR=1",
            env!("CARGO_BIN_EXE_mtm"),
        ])
        .args(args);
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot start mpirun ({e}): install Open MPI (Debian: openmpi-bin libopenmpi-dev)")
    });
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        text(&output.stderr)
    );
    output
}

/// The same process alone (no launcher), one compute thread.
fn single(args: &[&str], log: &str) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_mtm"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("MTM_LOG", log)
        .env("NO_COLOR", "1")
        .output()
        .expect("mtm runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    output
}

/// Two small synthetic sessions of different widths (so ranks hold batches of different
/// sessions, with different stitchers), a small model with dropout, a few steps.
fn config(dir: &Path, steps: u64) -> PathBuf {
    mtm_tests::TestRun::new(dir)
        .sessions(2, 4, (20, 34), (120, 140), (3, 4))
        .with(|c| {
            c.seed = 5;
            c.model.dropout = 0.2;
            c.train.steps = steps;
            c.train.lr = 2e-3;
            c.train.clip_grad_norm = 1.0;
            c.train.checkpoint_every = 3;
            c.train.keep_checkpoints = 0;
            c.train.validate_every = 3;
            c.eval.after_training = false;
            c.distributed.timeout_s = 60.0;
            c.distributed.breakdown_every = 3;
        })
        .write(&dir.join("ddp.toml"))
}

/// Every tensor of a safetensors file as f32 values.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect()
}

/// The largest difference between two checkpoints' parameters, relative to each tensor's
/// largest magnitude.
fn max_relative_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same tensors"
    );
    a.iter()
        .map(|(name, x)| {
            let y = &b[name];
            let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
            x.iter()
                .zip(y)
                .map(|(p, q)| f64::from((p - q).abs() / scale))
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

fn model_at(run: &Path, step: u64) -> PathBuf {
    run.join(format!("checkpoints/step-{step:08}/model.safetensors"))
}

/// Per-batch debug lines: (rank, step, micro) -> (global batch, mask fingerprint).
fn batches(stderr: &str) -> HashMap<(u64, u64, u64), (u64, u64)> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let start = line.find(&format!(" {key}="))? + key.len() + 2;
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    stderr
        .lines()
        .filter(|l| l.contains("global_batch="))
        .map(|l| {
            let get = |k| field(l, k).unwrap_or_else(|| panic!("{k} in {l}"));
            (
                (get("rank"), get("step"), get("micro")),
                (get("global_batch"), get("mask")),
            )
        })
        .collect()
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn two_ranks_train_like_one_rank_on_the_concatenated_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 6);
    let config = config.to_str().unwrap();
    let two = dir.path().join("two");
    let one = dir.path().join("one");
    let debug = "warn,mtm_trainer=debug";
    let out = run(mpirun(
        2,
        &[
            "train",
            "--config",
            config,
            "--set",
            &format!("out_dir={}", two.display()),
        ],
        debug,
    ));
    let two_stderr = text(&out.stderr);
    let out = single(
        &[
            "train",
            "--config",
            config,
            "--set",
            &format!("out_dir={}", one.display()),
            "--set",
            "train.accumulate=2",
        ],
        debug,
    );
    let one_stderr = text(&out.stderr);

    // Same global batches (each rank's batch of 8 is one of the single process's two
    // micro-batches), so the same parameters: tolerance 1e-5 of each tensor's scale for
    // the summation order of the all-reduce.
    let diff = max_relative_difference(&model_at(&two, 6), &model_at(&one, 6));
    assert!(
        diff <= 1e-5,
        "2 ranks vs 1 rank: relative difference {diff}"
    );
    for (a, b) in losses(&two).iter().zip(losses(&one)) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "losses {a} vs {b}");
    }

    // The ranks trained different batches with different masks; each batch got the masks
    // the single process drew for it.
    let (two_batches, one_batches) = (batches(&two_stderr), batches(&one_stderr));
    assert_eq!(two_batches.len(), 12, "{two_stderr}");
    for step in 0..6 {
        let (g0, m0) = two_batches[&(0, step, 0)];
        let (g1, m1) = two_batches[&(1, step, 0)];
        assert_ne!(g0, g1, "step {step}: both ranks trained batch {g0}");
        assert_ne!(m0, m1, "step {step}: both ranks drew the same masks");
        for (micro, (g, m)) in [(g0, m0), (g1, m1)].into_iter().enumerate() {
            assert_eq!(one_batches[&(0, step, micro as u64)], (g, m));
        }
    }
    // Only rank 0 logs and writes; the breakdown is logged every 3 steps.
    assert!(two_stderr.contains("rank 0 time"), "{two_stderr}");
    assert!(two_stderr.contains("all-reduce"), "{two_stderr}");
    assert_eq!(
        two_stderr.matches(" parameters on 2 sessions").count(),
        1,
        "{two_stderr}"
    );
    assert_eq!(
        two_stderr.matches("step 6: checkpoint").count(),
        1,
        "{two_stderr}"
    );
}

/// A report with its timings removed (they differ from run to run).
fn scores(path: &Path) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("wall_s");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    strip(&mut value);
    value
}

/// The evaluation after `mpirun -np 2 mtm train`, and `mpirun -np 2 mtm eval`, divide the
/// sessions between the ranks; both reports are the single process's, number for number.
#[test]
fn two_ranks_evaluate_like_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let config = mtm_tests::TestRun::new(dir.path())
        .sessions(3, 6, (18, 30), (50, 70), (3, 4))
        .set(&[
            "train.steps=3",
            "seed=3",
            r#"eval.tasks=["co-smooth","forward","intra","inter"]"#,
            "distributed.timeout_s=120",
        ])
        .write(&dir.path().join("eval.toml"));
    let config = config.to_str().unwrap();
    let run_dir = dir.path().join("run");
    let out = run(mpirun(2, &["train", "--config", config], "warn"));
    let trained = text(&out.stderr);
    let after_training = run_dir.join("eval-test.json");
    assert!(after_training.exists(), "{trained}");
    let checkpoint = run_dir.to_str().unwrap();
    let one = dir.path().join("one.json");
    single(
        &[
            "eval",
            "--checkpoint",
            checkpoint,
            "--out",
            one.to_str().unwrap(),
        ],
        "warn",
    );
    let two = dir.path().join("two.json");
    let out = run(mpirun(
        2,
        &[
            "eval",
            "--checkpoint",
            checkpoint,
            "--out",
            two.to_str().unwrap(),
        ],
        "warn",
    ));
    let evaluated = text(&out.stderr);
    assert!(evaluated.contains("over 2 ranks"), "{evaluated}");
    let single_report = scores(&one);
    assert_eq!(
        single_report["sessions"].as_array().map(Vec::len),
        Some(3),
        "{single_report}"
    );
    assert_eq!(scores(&two), single_report, "mpirun -np 2 mtm eval");
    assert_eq!(
        scores(&after_training),
        single_report,
        "the evaluation after mpirun -np 2 mtm train"
    );
}

#[test]
fn a_two_rank_run_resumes_exactly_and_at_another_world_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 6);
    let config = config.to_str().unwrap();
    let straight = dir.path().join("run");
    run(mpirun(2, &["train", "--config", config], "warn"));

    // A copy of the run as a crash after step 4 would leave it: newest checkpoint step 3.
    let resumed = dir.path().join("resumed");
    let copy = Command::new("cp")
        .args(["-r", straight.to_str().unwrap(), resumed.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::remove_dir_all(resumed.join("checkpoints/step-00000006")).unwrap();
    std::fs::write(resumed.join("checkpoints/latest"), "step-00000003\n").unwrap();
    let at_another_size = dir.path().join("one");
    Command::new("cp")
        .args([
            "-r",
            resumed.to_str().unwrap(),
            at_another_size.to_str().unwrap(),
        ])
        .status()
        .unwrap();

    let set_out = |p: &Path| format!("out_dir={}", p.display());
    let out = run(mpirun(
        2,
        &[
            "train",
            "--resume",
            resumed.to_str().unwrap(),
            "--set",
            &set_out(&resumed),
        ],
        "warn",
    ));
    assert!(
        text(&out.stderr).contains("resuming at step 3"),
        "{}",
        text(&out.stderr)
    );
    let diff = max_relative_difference(&model_at(&straight, 6), &model_at(&resumed, 6));
    assert_eq!(diff, 0.0, "a 2-rank resume repeats the run bit for bit");
    assert_eq!(
        losses(&resumed),
        losses(&straight),
        "metrics hold each step once"
    );

    // One process accumulating two batches continues the 2-rank run.
    single(
        &[
            "train",
            "--resume",
            at_another_size.to_str().unwrap(),
            "--set",
            &set_out(&at_another_size),
            "--set",
            "train.accumulate=2",
        ],
        "warn",
    );
    let diff = max_relative_difference(&model_at(&straight, 6), &model_at(&at_another_size, 6));
    assert!(diff <= 1e-5, "1-rank resume of a 2-rank run: {diff}");
}

/// Starts a long 2-rank run, waits until it trains, sends `signal` to rank 1 and returns
/// (seconds from the signal to mpirun's exit, exit success, stderr).
fn signal_rank_one(signal: &str, timeout_s: u64) -> (f64, bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1_000_000);
    let mut command = mpirun(
        2,
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--set",
            &format!("distributed.timeout_s={timeout_s}"),
            "--set",
            "train.checkpoint_every=0",
        ],
        "warn",
    );
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("mpirun starts (install openmpi-bin)");
    // Training has started once rank 0 has written a metrics line.
    let metrics = dir.path().join("run/metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.lines().count() < 3) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training did not start: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = mtm_tests::mpirun_rank_pid(child.id(), 1).expect("rank 1 among mpirun's children");
    let killed = Instant::now();
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if killed.elapsed() > Duration::from_secs(timeout_s + 120) {
            child.kill().ok();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the run did not end after rank 1 got {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = killed.elapsed().as_secs_f64();
    (
        elapsed,
        exit.success(),
        std::fs::read_to_string(&stderr_path).unwrap(),
    )
}

#[test]
fn a_stalled_rank_is_named_and_the_others_exit_within_the_timeout() {
    let timeout = 4;
    let (elapsed, success, stderr) = signal_rank_one("-STOP", timeout);
    assert!(!success, "the run must fail");
    // The timeout, a grace period for the liveness check (max(timeout / 4, 2 s)), and
    // mpirun tearing the job down.
    assert!(
        elapsed < (timeout + 2 + 20) as f64,
        "rank 0 took {elapsed:.1} s to give up"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("did not complete within"))
        .unwrap_or_else(|| panic!("no timeout message in\n{stderr}"));
    assert!(line.contains("rank 0, step "), "{line}");
    assert!(line.contains("collective #"), "{line}");
    assert!(line.contains("rank 1 is lost"), "{line}");
    assert!(line.contains("last collectives on this rank: #"), "{line}");
}

#[test]
fn a_killed_rank_ends_the_run_naming_it() {
    let (elapsed, success, stderr) = signal_rank_one("-KILL", 30);
    assert!(!success, "the run must fail");
    assert!(elapsed < 30.0, "the run took {elapsed:.1} s to end");
    // mpirun notices the death first and ends the job, naming the rank.
    assert!(
        stderr.contains("process rank 1") || stderr.contains("rank 1 is lost"),
        "{stderr}"
    );
}

/// `mpirun -np 2 mtm train` on wgpu (lavapipe's Vulkan device in CI): gradients leave the
/// device, cross MPI and come back, and the two ranks end where one wgpu process training
/// the concatenated batch ends; the evaluation after training runs and reports.
#[cfg(feature = "wgpu")]
#[test]
fn two_ranks_on_wgpu_train_like_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 4);
    let config = config.to_str().unwrap();
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    // burn's dropout on wgpu draws where the tensor lives, the same on every rank for the
    // same batch; off here so that only the all-reduce separates the two runs.
    let common = [
        "--set",
        "distributed.device=wgpu",
        "--set",
        "model.dropout=0",
        "--set",
        "model.embed_dropout=0",
        // Rotary tables move with the model to the CPU for the evaluation.
        "--set",
        "model.positions=rotary",
    ];
    let out = run(mpirun(
        2,
        &[
            &["train", "--config", config],
            &common[..],
            &[
                "--set",
                &format!("out_dir={}", two.display()),
                "--set",
                "eval.after_training=true",
                "--set",
                "eval.tasks=[\"co-smooth\"]",
                "--set",
                "eval.baseline=false",
            ],
        ]
        .concat(),
        "warn,mtm_trainer=info",
    ));
    let two_stderr = text(&out.stderr);
    single(
        &[
            &["train", "--config", config],
            &common[..],
            &[
                "--set",
                &format!("out_dir={}", one.display()),
                "--set",
                "train.accumulate=2",
            ],
        ]
        .concat(),
        "warn",
    );
    let diff = max_relative_difference(&model_at(&two, 4), &model_at(&one, 4));
    assert!(
        diff <= 1e-4,
        "2 wgpu ranks vs 1: relative difference {diff}\n{two_stderr}"
    );
    let (a, b) = (losses(&two), losses(&one));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * y.abs(), "losses {x} vs {y}");
    }
    let report = scores(&two.join("eval-test.json"));
    assert!(
        report.to_string().contains("co-smooth"),
        "the evaluation report holds no co-smoothing: {report}"
    );
}
