//! `mtm sweep` and `mtm launch slurm` as users run them: a tiny sweep run cell by cell,
//! resumed without re-running finished cells, reported with fits and plots; the Slurm
//! array and batch scripts; the allocation check under Slurm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mtm_trainer::config::Task;

fn mtm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mtm"));
    c.args(args)
        .env("MTM_LOG", "warn")
        .env("RAYON_NUM_THREADS", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("mtm runs")
}

fn ok(args: &[&str]) -> (String, String) {
    let o = mtm(args, &[]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "mtm {args:?} failed:\n{err}");
    (out, err)
}

/// A base run configuration and a sweep over it: 1, 2, 3 pretraining sessions and from
/// scratch, 2 seeds each (8 cells).
fn sweep(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let o = mtm(
        &[
            "synth",
            "--out",
            data.to_str().unwrap(),
            "--sessions",
            "5",
            "--units",
            "16..24",
            "--trials",
            "60..80",
            "--seed",
            "4",
        ],
        &[],
    );
    assert!(o.status.success());
    let eids = mtm_tests::local_eids(&data);
    mtm_tests::TestRun::new(dir)
        .model(8, 1)
        .with(|c| {
            c.out_dir = "unused".into();
            c.data.root = data.display().to_string();
            c.data.synthesize = None;
            c.train.steps = 3;
            c.train.lr = 1e-4;
            c.eval.heldout_group = 8;
            c.eval.tasks = vec![Task::CoSmooth, Task::Choice];
            c.slurm.nodes = 1;
            c.slurm.tasks_per_node = 2;
            c.slurm.cpus_per_task = 4;
            c.slurm.time = "01:00:00".into();
        })
        .write(&dir.join("base.toml"));
    let list = |e: &[String]| {
        e.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        format!(
            r#"
out_dir = "{}"
base = "base.toml"
pretrain_sessions = [{}]
held_out = [{}]
[grid]
sessions = [1, 2, 3]
masking = ["temporal"]
seeds = [1, 2]
from_scratch = true
[budget]
steps_base = 2
steps_per_session = 1
min_steps = 2
max_steps = 10
finetune_steps = 2
"#,
            dir.join("out").display(),
            list(&eids[..3]),
            list(&eids[3..4])
        ),
    )
    .unwrap();
    path
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_sweep_runs_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let config = sweep(dir.path());
    let config = config.to_str().unwrap();
    let out = dir.path().join("out");

    let (table, _) = ok(&["sweep", "--config", config, "--dry-run"]);
    assert!(table.contains("base-temporal-s001-seed1"), "{table}");
    assert!(table.contains("base-temporal-s003-seed2"), "{table}");
    assert!(table.contains("base-temporal-s000-seed1"), "{table}");
    assert_eq!(table.matches("pending").count(), 8, "{table}");
    assert!(!out.exists(), "a dry run writes nothing");

    // One cell alone (as an array task would), then the whole sweep: the finished cell is
    // skipped, not re-run.
    ok(&["sweep", "--config", config, "--cell", "4"]);
    let first = out.join("cells/base-temporal-s002-seed1");
    let stamp = modified(&first.join("result.json"));
    // The cell kept each baseline it fit (held-out co-smoothing; its 2 sessions' own
    // co-smoothing). Marking the held-out entry shows every later cell reads it back
    // instead of fitting the baseline again.
    let cache = out.join("baseline-cache");
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // (Its 2 pool sessions each have co-smoothing and forward prediction.)
    assert_eq!(entries.len(), 5, "{entries:?}");
    let held_out_eid = mtm_tests::local_eids(&dir.path().join("data"))[3].clone();
    let held_out_entry = entries
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&held_out_eid)
        })
        .expect("the held-out session's entry");
    let mut entry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(held_out_entry).unwrap()).unwrap();
    let fitted = entry["score"]["bps_per_unit_mean"].as_f64().unwrap();
    entry["score"]["bps_per_unit_mean"] = serde_json::json!(42.0);
    std::fs::write(held_out_entry, entry.to_string()).unwrap();
    let (_, log) = ok(&["sweep", "--config", config]);
    assert!(
        log.contains("base-temporal-s002-seed1: done, skipped"),
        "{log}"
    );
    assert_eq!(modified(&first.join("result.json")), stamp);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "{csv}");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row_of = |id: &str| -> Vec<&str> {
        csv.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing: {csv}"))
            .split(',')
            .collect()
    };
    let at =
        |row: &[&str], name: &str| row[header.iter().position(|h| *h == name).unwrap()].to_string();
    // Every other cell took the held-out baseline from the cache; the first had fit it.
    for line in csv.lines().skip(1) {
        let expected = if line.starts_with("base-temporal-s002-seed1,") {
            fitted
        } else {
            42.0
        };
        let row: Vec<&str> = line.split(',').collect();
        let value: f64 = at(&row, "co_smooth_baseline").parse().unwrap();
        assert_eq!(value, expected, "{line}");
    }
    // One entry per (session, task) scored: the held-out session's co-smoothing and the 3
    // pool sessions' co-smoothing and forward prediction.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 7);
    let row = row_of("base-temporal-s002-seed1");
    let col = |name: &str| at(&row, name);
    assert_eq!(col("sessions"), "2");
    assert_eq!(col("steps"), "4");
    assert!(col("co_smooth").parse::<f64>().is_ok(), "{csv}");
    assert!(col("co_smooth_baseline").parse::<f64>().is_ok(), "{csv}");
    assert!(col("tokens").parse::<u64>().unwrap() > 0);
    // 4 steps of 16 trials (the budget's batch) on one rank; the passes over the pool follow.
    assert_eq!(col("budget_rule"), "steps");
    assert_eq!(col("trials_seen"), "64");
    let epochs: f64 = col("epochs_seen").parse().unwrap();
    let trials: f64 = col("trials").parse().unwrap();
    assert!((epochs - 64.0 / trials).abs() < 1e-9, "{csv}");
    assert!(out.join("results.parquet").is_file());
    let (table, _) = ok(&["sweep", "--config", config, "--dry-run"]);
    assert_eq!(table.matches("  done").count(), 8, "{table}");
    // Pretrained cells score their own sessions beside the baseline; a cell from scratch
    // pretrains nothing.
    assert!(col("own_co_smooth").parse::<f64>().is_ok(), "{csv}");
    assert!(
        col("own_co_smooth_baseline").parse::<f64>().is_ok(),
        "{csv}"
    );
    assert!(col("own_forward").parse::<f64>().is_ok(), "{csv}");
    assert!(col("own_forward_baseline").parse::<f64>().is_ok(), "{csv}");
    let scratch = row_of("base-temporal-s000-seed2");
    assert_eq!(
        (
            at(&scratch, "steps").as_str(),
            at(&scratch, "own_co_smooth").as_str()
        ),
        ("0", "")
    );
    assert!(at(&scratch, "co_smooth").parse::<f64>().is_ok(), "{csv}");

    let (fits, _) = ok(&["sweep", "report", "--config", config]);
    assert!(fits.contains("co_smooth"), "{fits}");
    // The checks, from every cell's own-session scores and per-session held-out scores (1
    // held-out session, 3 pool sizes), on the terminal and in summary.md.
    for check in [
        "co-smoothing on its own pretraining sessions, temporal: ",
        " of 6 pretrained cells above the smoothing + GLM baseline",
        "held-out co-smoothing, temporal: pretrained above from scratch on ",
        " of 3 (pool size, held-out session) pairs",
    ] {
        assert!(fits.contains(check), "{check}: {fits}");
    }
    assert!(
        fits.contains("pretraining budget: steps = clamp(2 + 1 x sessions, 2, 10)"),
        "{fits}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fits.json")).unwrap()).unwrap();
    let fits = json["fits"].as_array().unwrap();
    // The fit sees every seed of every pretrained cell: 3 session counts x 2 seeds.
    assert_eq!(fits[0]["points"].as_array().unwrap().len(), 6, "{json}");
    // The seed summary: each setting's mean over its 2 seeds.
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let line = summary
        .lines()
        .find(|l| l.starts_with("base,temporal,2,co_smooth,"))
        .unwrap_or_else(|| panic!("{summary}"));
    let mean: f64 = line.split(',').nth(5).unwrap().parse().unwrap();
    let seeds: Vec<f64> = ["base-temporal-s002-seed1", "base-temporal-s002-seed2"]
        .iter()
        .map(|id| at(&row_of(id), "co_smooth").parse().unwrap())
        .collect();
    assert!(
        (mean - (seeds[0] + seeds[1]) / 2.0).abs() < 1e-9,
        "{line} vs {seeds:?}"
    );
    assert!(line.split(',').nth(4) == Some("2"), "{line}");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Checks\n"), "{md}");
    for file in ["co_smooth.svg", "co_smooth.png", "choice.svg"] {
        assert!(out.join("plots").join(file).is_file(), "{file} missing");
    }

    // The Slurm array covers the cells still to do (none now) or, after one is removed,
    // exactly that one.
    std::fs::remove_file(first.join("result.json")).unwrap();
    let (script, _) = ok(&["sweep", "--config", config, "--slurm"]);
    assert!(script.contains("#SBATCH --array=4\n"), "{script}");
    assert!(script.contains("--cell $SLURM_ARRAY_TASK_ID"), "{script}");
    assert!(script.contains("%x-%A_%a.out"), "{script}");
}

#[test]
fn launch_slurm_writes_a_script_and_the_allocation_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = sweep(dir.path());
    let base = config.with_file_name("base.toml");
    let base = base.to_str().unwrap();
    let out_dir = format!("out_dir={}", dir.path().join("run").display());

    let (script, _) = ok(&[
        "launch",
        "slurm",
        "--config",
        base,
        "--set",
        &out_dir,
        "--dry-run",
    ]);
    assert!(script.contains("#SBATCH --ntasks-per-node=2"), "{script}");
    assert!(script.contains("#SBATCH --signal=B:USR1@300"), "{script}");
    assert!(script.contains("train --config"), "{script}");
    assert!(!dir.path().join("run").exists(), "a dry run writes nothing");
    let (_, log) = ok(&["launch", "slurm", "--config", base, "--set", &out_dir]);
    assert!(log.contains("sbatch"), "{log}");
    let written = dir.path().join("run/launch/run.sbatch");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&written)
        .status()
        .unwrap();
    assert!(syntax.success());
    assert!(dir.path().join("run/launch/config.toml").is_file());

    // GPUs asked for a CPU run: explained.
    let o = mtm(
        &[
            "launch",
            "slurm",
            "--config",
            base,
            "--set",
            "slurm.gpus_per_node=2",
            "--dry-run",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("distributed.device"));

    // Under a Slurm job that does not match [slurm]: explained before anything runs.
    let o = mtm(
        &["train", "--config", base, "--set", &out_dir],
        &[
            ("SLURM_JOB_ID", "77"),
            ("SLURM_JOB_NUM_NODES", "2"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_CPUS_PER_TASK", "4"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("Slurm job 77")
            && err.contains("nodes: the configuration asks for 1, Slurm allocated 2"),
        "{err}"
    );
}

/// Every `metrics.jsonl` under `dir`.
#[test]
fn a_parallel_sweep_runs_longest_first_and_matches_one_cell_at_a_time() {
    let (serial, parallel) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let serial_config = sweep(serial.path());
    let parallel_config = sweep(parallel.path());
    ok(&["sweep", "--config", serial_config.to_str().unwrap()]);
    let (_, log) = ok(&[
        "sweep",
        "--config",
        parallel_config.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    // Longest first: the 3-session cells start first, the cells from scratch last.
    let started: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("cell "))
        .filter(|l| l.contains(" started:"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(started.len(), 8, "{log}");
    assert!(started[..2].iter().all(|id| id.contains("-s003-")), "{log}");
    assert!(started[6..].iter().all(|id| id.contains("-s000-")), "{log}");
    assert_eq!(log.matches(" done (").count(), 8, "{log}");
    // Each cell's own output is kept in its folder.
    for id in &started {
        let cell_log = parallel.path().join("out/cells").join(id).join("sweep.log");
        let text = std::fs::read_to_string(&cell_log).unwrap();
        assert!(text.contains("held-out co-smooth"), "{id}: {text}");
    }
    // Each cell is its own seeded process: the numbers are those of the serial sweep.
    let table = |dir: &Path| -> Vec<Vec<String>> {
        let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let keep: Vec<usize> = [
            "run_id",
            "steps",
            "co_smooth",
            "choice",
            "co_smooth_baseline",
            "own_co_smooth",
            "own_forward",
        ]
        .iter()
        .map(|name| header.iter().position(|h| h == name).unwrap())
        .collect();
        let mut rows: Vec<Vec<String>> = csv
            .lines()
            .skip(1)
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                keep.iter().map(|&i| fields[i].to_string()).collect()
            })
            .collect();
        rows.sort();
        rows
    };
    let (a, b) = (table(serial.path()), table(parallel.path()));
    assert_eq!(a.len(), 8);
    assert_eq!(a, b);
}

fn metrics_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "metrics.jsonl") {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_signal_to_the_sweep_stops_its_running_cell_too() {
    a_signal_stops(&[]);
}

#[test]
fn a_signal_to_a_parallel_sweep_stops_every_running_cell() {
    a_signal_stops(&["--jobs", "2"]);
}

/// Runs a sweep of long cells with `extra` arguments, sends it SIGINT once training has
/// started, and checks that it stops with a checkpoint and leaves no training behind.
fn a_signal_stops(extra: &[&str]) {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = sweep(dir.path());
    // Cells long enough to be caught mid-training.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("steps_base = 2", "steps_base = 100000")
        .replace("max_steps = 10", "max_steps = 100000")
        .replace("from_scratch = true", "from_scratch = false");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtm"))
        .args(["sweep", "--config", path.to_str().unwrap()])
        .args(extra)
        .env("MTM_LOG", "warn")
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("out");
    let started = Instant::now();
    let metrics = loop {
        let lines = metrics_files(&out)
            .into_iter()
            .find(|m| std::fs::read_to_string(m).is_ok_and(|t| t.lines().count() >= 3));
        if let Some(m) = lines {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no cell started training"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // SIGINT to the sweep alone (not its process group), as `kill -INT` would.
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "the sweep did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(75), "stopped with a checkpoint");
    // Every running cell's training stopped with the sweep: no metrics file grows.
    let lengths = |files: &[PathBuf]| -> Vec<u64> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .collect()
    };
    let files = metrics_files(&out);
    let before = lengths(&files);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lengths(&files), before, "a child outlived the sweep");
    assert_eq!(
        metrics_files(&out).len(),
        files.len(),
        "a cell started after the stop"
    );
    let run = metrics.parent().unwrap();
    assert!(
        run.join("checkpoints/latest").exists(),
        "the stop left a checkpoint"
    );
}
