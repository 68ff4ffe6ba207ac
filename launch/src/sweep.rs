//! `mtm sweep`: run the cells of a scaling sweep (locally or as a Slurm job array), and
//! `mtm sweep report`: fit and plot the results.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mtm_cluster::slurm::{sbatch_script, shell_quote};
use mtm_dataloader::{Dataset, Split};
use mtm_sweep::checks::{CHECKED, HeldOutScore};
use mtm_sweep::grid::{BudgetRule, Cell, SweepConfig};
use mtm_sweep::results::{self, Row};
use mtm_trainer::checkpoint;
use mtm_trainer::config::RunConfig;
use mtm_trainer::config::Task;
use mtm_trainer::finetune::{FINETUNE_REPORT, FinetuneReport};
use mtm_trainer::report::Report;

/// Arguments of `mtm sweep`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// The sweep file (see configs/scaling-quick.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print every cell with its derived settings and status; run nothing.
    #[arg(long, conflicts_with_all = ["slurm", "cell"])]
    dry_run: bool,
    /// Write a Slurm job array (one task per unfinished cell, resources from the base
    /// configuration's [slurm] table) instead of running the cells here.
    #[arg(long, conflicts_with = "cell")]
    slurm: bool,
    /// Run only the cell with this index (what each array task does).
    #[arg(long)]
    cell: Option<usize>,
    /// Cells to run at once on this machine, each its own `mtm sweep --cell` process with
    /// its output in the cell's folder (`sweep.log`), longest first. The cores are shared
    /// out: each cell gets RAYON_NUM_THREADS = cores / jobs unless it is set. On 2 cores,
    /// `--jobs 2` runs a sweep of the small model in well under half the time of one cell
    /// at a time on both cores (docs/scaling/).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..),
          conflicts_with_all = ["cell", "slurm", "dry_run"])]
    jobs: u16,
}

/// `mtm sweep` subcommands.
#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Fit each metric against the number of pretraining sessions (power law with offset,
    /// `y = y_inf - b n^-alpha`, 95 % bootstrap intervals), write fits.json and plots
    /// (SVG and PNG, one per metric, a line per masking scheme and model size).
    Report {
        /// The sweep file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// `mtm sweep`.
pub fn run(args: SweepArgs) -> Result<ExitCode> {
    if let Some(SweepCommand::Report { config }) = args.command {
        return report(&config);
    }
    let Some(path) = args.config else {
        bail!("give --config SWEEP_FILE (see configs/scaling-quick.toml)");
    };
    let (sweep, _, base_text) = SweepConfig::load(&path)?;
    let cells = sweep.cells();
    if args.dry_run {
        print_cells(&sweep, &cells)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.slurm {
        return slurm_array(&sweep, &cells, &path);
    }
    let exe = std::env::current_exe().context("locating the mtm binary")?;
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&STOP))?;
    }
    if args.jobs > 1 {
        return run_parallel(&sweep, &cells, &path, usize::from(args.jobs), &exe);
    }
    let chosen: Vec<&Cell> = match args.cell {
        Some(i) => vec![cells.get(i).with_context(|| {
            format!("the sweep has {} cells; --cell {i} is not one", cells.len())
        })?],
        None => cells.iter().collect(),
    };
    let started = Instant::now();
    for (k, cell) in chosen.iter().enumerate() {
        let dir = sweep.cell_dir(cell);
        if STOP.load(Ordering::Relaxed) {
            eprintln!(
                "stopped on a signal before cell {}; run the same command to continue",
                cell.id
            );
            return Ok(ExitCode::from(crate::train::STOPPED_EXIT_CODE));
        }
        if results::read_row(&dir)?.is_some() {
            eprintln!("cell {}/{} {}: done, skipped", k + 1, chosen.len(), cell.id);
            continue;
        }
        eprintln!(
            "cell {}/{} {}: {} session(s), {} masking, model {}, seed {}, {} steps of {} trials ({:.0} s into the sweep)",
            k + 1,
            chosen.len(),
            cell.id,
            cell.sessions,
            cell.masking,
            cell.model,
            cell.seed,
            cell.steps,
            cell.batch_size,
            started.elapsed().as_secs_f64()
        );
        match run_cell(&sweep, cell, &base_text, &exe)? {
            Some(row) => {
                results::write_row(&dir, &row)?;
                eprintln!(
                    "cell {}: held-out co-smooth {} bps, {:.0} s",
                    cell.id,
                    row.co_smooth.map_or("-".into(), |v| format!("{v:.4}")),
                    row.wall_time_s
                );
            }
            None => {
                eprintln!(
                    "cell {} stopped on a signal with a checkpoint; run the same command to continue",
                    cell.id
                );
                return Ok(ExitCode::from(crate::train::STOPPED_EXIT_CODE));
            }
        }
        gather(&sweep, &cells)?;
    }
    let rows = gather(&sweep, &cells)?;
    eprintln!(
        "{} of {} cells done; results in {}/results.csv and results.parquet; `mtm sweep report --config {}` fits and plots them",
        rows.len(),
        cells.len(),
        sweep.out_dir.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs the unfinished cells `jobs` at a time, each as `mtm sweep --cell` (its own
/// process, log and checkpoints, as a Slurm array task is), longest first so that the
/// sweep does not end waiting on one long cell. A signal is passed on to every cell as
/// SIGTERM (each stops with a checkpoint); a failed cell stops new ones from starting,
/// and the error names it and its log once the running ones have finished.
fn run_parallel(
    sweep: &SweepConfig,
    cells: &[Cell],
    path: &Path,
    jobs: usize,
    exe: &Path,
) -> Result<ExitCode> {
    let mut pending = Vec::new();
    for cell in cells {
        if results::read_row(&sweep.cell_dir(cell))?.is_some() {
            eprintln!("cell {}: done, skipped", cell.id);
        } else {
            pending.push(cell);
        }
    }
    // A cell from scratch has 0 steps: it only fine-tunes, and goes last.
    pending.sort_by_key(|c| std::cmp::Reverse(c.steps));
    let threads = match std::env::var_os("RAYON_NUM_THREADS") {
        Some(_) => None,
        None => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Some((cores / jobs).max(1))
        }
    };
    eprintln!(
        "{} cells to run, {jobs} at a time{}; each cell's output goes to its sweep.log",
        pending.len(),
        threads.map_or(String::new(), |t| format!(", {t} thread(s) each"))
    );
    let total = pending.len();
    let started = Instant::now();
    let mut queue = pending.into_iter();
    // (cell, process, whether the stop has been passed on to it)
    let mut running: Vec<(&Cell, std::process::Child, bool)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut finished = 0;
    loop {
        let stop = STOP.load(Ordering::Relaxed);
        while !stop && failed.is_empty() && running.len() < jobs {
            let Some(cell) = queue.next() else { break };
            let dir = sweep.cell_dir(cell);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let log_path = dir.join("sweep.log");
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let mut command = Command::new(exe);
            command
                .arg("sweep")
                .arg("--config")
                .arg(path)
                .args(["--cell", &cell.index.to_string()])
                .stdout(log.try_clone()?)
                .stderr(log);
            if let Some(t) = threads {
                command.env("RAYON_NUM_THREADS", t.to_string());
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            eprintln!(
                "cell {} started: {} session(s), {} masking, model {}, seed {}, {} steps ({:.0} s into the sweep; log {})",
                cell.id,
                cell.sessions,
                cell.masking,
                cell.model,
                cell.seed,
                cell.steps,
                started.elapsed().as_secs_f64(),
                log_path.display()
            );
            running.push((cell, child, false));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut k = 0;
        while k < running.len() {
            let (cell, child, forwarded) = &mut running[k];
            if stop && !*forwarded {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                // The cell may have ended in between: then there is nothing to stop.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                *forwarded = true;
            }
            let Some(status) = child.try_wait()? else {
                k += 1;
                continue;
            };
            let cell: &Cell = cell;
            let log_path = sweep.cell_dir(cell).join("sweep.log");
            match results::read_row(&sweep.cell_dir(cell))? {
                Some(row) if status.success() => {
                    finished += 1;
                    eprintln!(
                        "cell {} done ({finished} of {total}): held-out co-smooth {} bps, {:.0} s ({:.0} s into the sweep)",
                        cell.id,
                        row.co_smooth.map_or("-".into(), |v| format!("{v:.4}")),
                        row.wall_time_s,
                        started.elapsed().as_secs_f64()
                    );
                }
                _ if stop => eprintln!("cell {} stopped; it resumes from its checkpoint", cell.id),
                _ => {
                    eprintln!(
                        "cell {} failed ({status}); see {}",
                        cell.id,
                        log_path.display()
                    );
                    failed.push(format!("{} ({})", cell.id, log_path.display()));
                }
            }
            running.swap_remove(k);
        }
    }
    let rows = gather(sweep, cells)?;
    if !failed.is_empty() {
        bail!(
            "{} cell(s) failed: {}; the other cells' results are kept, and the same command runs what is left",
            failed.len(),
            failed.join(", ")
        );
    }
    if STOP.load(Ordering::Relaxed) {
        eprintln!("stopped on a signal; run the same command to continue");
        return Ok(ExitCode::from(crate::train::STOPPED_EXIT_CODE));
    }
    eprintln!(
        "{} of {} cells done in {:.0} s; results in {}/results.csv and results.parquet; `mtm sweep report --config {}` fits and plots them",
        rows.len(),
        cells.len(),
        started.elapsed().as_secs_f64(),
        sweep.out_dir.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn status(sweep: &SweepConfig, cell: &Cell) -> Result<&'static str> {
    let dir = sweep.cell_dir(cell);
    Ok(if results::read_row(&dir)?.is_some() {
        "done"
    } else if dir.exists() {
        "partial"
    } else {
        "pending"
    })
}

fn print_cells(sweep: &SweepConfig, cells: &[Cell]) -> Result<()> {
    println!(
        "{:>5}  {:<34} {:>8} {:<17} {:<10} {:>5} {:>7} {:>6}  status",
        "index", "run id", "sessions", "masking", "model", "seed", "steps", "batch"
    );
    for c in cells {
        // The steps as the rule decides them: a pass count, a cap, or none from scratch.
        let steps = match (c.pretrains(), sweep.budget.rule) {
            (false, _) => "none".to_string(),
            (true, BudgetRule::Epochs) => format!("{} ep", sweep.budget.epochs),
            (true, BudgetRule::Converge) => format!("<={}", c.steps),
            (true, BudgetRule::Steps) => c.steps.to_string(),
        };
        println!(
            "{:>5}  {:<34} {:>8} {:<17} {:<10} {:>5} {:>7} {:>6}  {}",
            c.index,
            c.id,
            c.sessions,
            c.masking,
            c.model,
            c.seed,
            steps,
            c.batch_size,
            status(sweep, c)?
        );
    }
    println!(
        "{} cells; pretraining budget: {}; held out: {}; fine-tuning {} steps per held-out session; output in {}",
        cells.len(),
        sweep.budget.describe(),
        sweep.held_out.join(", "),
        sweep.budget.finetune_steps,
        sweep.out_dir.display()
    );
    Ok(())
}

/// Set when the sweep receives SIGINT or SIGTERM.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Runs `mtm` with `args`; `Ok(false)` when it stopped on a signal with a checkpoint. A
/// signal to the sweep is passed on to the child as SIGTERM, its graceful stop (a
/// checkpoint, then exit 75), so that no child outlives the sweep; not as SIGINT, which a
/// terminal's Ctrl-C has already sent it and a second one of which ends it at once.
fn mtm(exe: &Path, args: &[&str]) -> Result<bool> {
    let mut child = Command::new(exe)
        .args(args)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !forwarded && STOP.load(Ordering::Relaxed) {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            // The child may have ended in between: then there is nothing to stop.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    match status.code() {
        Some(0) => Ok(true),
        Some(code) if code == i32::from(crate::train::STOPPED_EXIT_CODE) => Ok(false),
        // A child without a graceful stop (fine-tuning is short and starts again).
        _ if forwarded => Ok(false),
        _ => bail!("mtm {} failed ({status})", args.join(" ")),
    }
}

/// Pretrains (unless the cell is from scratch), fine-tunes and evaluates one cell; `None`
/// when stopped by a signal. An interrupted pretraining resumes from its checkpoint; an
/// interrupted fine-tuning starts again (it is short).
fn run_cell(sweep: &SweepConfig, cell: &Cell, base_text: &str, exe: &Path) -> Result<Option<Row>> {
    let dir = sweep.cell_dir(cell);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let fine = sweep.finetune_config(cell, base_text)?;
    let fine_path = dir.join("finetune.toml").display().to_string();
    std::fs::write(&fine_path, fine.to_toml())?;
    let started = Instant::now();
    let pre = if cell.pretrains() {
        let pre = sweep.pretrain_config(cell, base_text)?;
        let pre_path = dir.join("pretrain.toml").display().to_string();
        std::fs::write(&pre_path, pre.to_toml())?;
        if !mtm(exe, &["train", "--config", &pre_path])? {
            return Ok(None);
        }
        Some(pre)
    } else {
        None
    };
    let report_path = fine.out_dir.join(FINETUNE_REPORT);
    if !report_path.exists() {
        if fine.out_dir.exists() {
            std::fs::remove_dir_all(&fine.out_dir)
                .with_context(|| format!("clearing {}", fine.out_dir.display()))?;
        }
        let source = pre.as_ref().map(|p| p.out_dir.display().to_string());
        let mut args = vec!["finetune", "--config", &fine_path];
        if let Some(source) = &source {
            args.extend(["--checkpoint", source]);
        }
        if !mtm(exe, &args)? {
            return Ok(None);
        }
    }
    let report = read_json::<FinetuneReport>(&report_path)?.report;
    let pretraining = match &pre {
        Some(pre) => Pretraining::read(pre, cell)?,
        None => Pretraining::default(),
    };
    Ok(Some(Row {
        run_id: cell.id.clone(),
        sessions: cell.sessions as u64,
        trials: pretraining.trials,
        tokens: pretraining.tokens,
        masking: cell.masking.clone(),
        model: cell.model.clone(),
        seed: cell.seed,
        parameters: pretraining.parameters,
        steps: pretraining.steps,
        batch_size: cell.batch_size as u64,
        budget_rule: sweep.budget.rule.name().to_string(),
        trials_seen: pretraining.trials_seen,
        epochs_seen: pretraining.trials_seen as f64 / pretraining.trials.max(1) as f64,
        co_smooth: report.mean_of(Task::CoSmooth),
        forward: report.mean_of(Task::Forward),
        intra: report.mean_of(Task::Intra),
        inter: report.mean_of(Task::Inter),
        choice: report.mean_of(Task::Choice),
        whisker: report.mean_of(Task::Whisker),
        co_smooth_baseline: report.baseline_of(Task::CoSmooth),
        forward_baseline: report.baseline_of(Task::Forward),
        intra_baseline: report.baseline_of(Task::Intra),
        inter_baseline: report.baseline_of(Task::Inter),
        co_smooth_ceiling: report.ceiling_of(Task::CoSmooth),
        forward_ceiling: report.ceiling_of(Task::Forward),
        intra_ceiling: report.ceiling_of(Task::Intra),
        inter_ceiling: report.ceiling_of(Task::Inter),
        own_co_smooth: pretraining.own_co_smooth,
        own_co_smooth_baseline: pretraining.own_co_smooth_baseline,
        own_co_smooth_ceiling: pretraining.own_co_smooth_ceiling,
        own_forward: pretraining.own_forward,
        own_forward_baseline: pretraining.own_forward_baseline,
        own_forward_ceiling: pretraining.own_forward_ceiling,
        wall_time_s: started.elapsed().as_secs_f64(),
        world_size: pretraining.world_size,
        git_commit: git_commit(),
        config_hash: results::config_hash(
            &(pre.as_ref().map(RunConfig::to_toml).unwrap_or_default() + &fine.to_toml()),
        ),
    }))
}

/// What a cell's pretraining did: zeros for a cell from scratch.
#[derive(Default)]
struct Pretraining {
    trials: u64,
    tokens: u64,
    parameters: u64,
    steps: u64,
    trials_seen: u64,
    world_size: u64,
    /// Co-smoothing on its own sessions' test trials (model, baseline, ceiling), when the
    /// sweep scores it.
    own_co_smooth: Option<f64>,
    own_co_smooth_baseline: Option<f64>,
    own_co_smooth_ceiling: Option<f64>,
    /// Forward prediction on the same trials (model, baseline, ceiling).
    own_forward: Option<f64>,
    own_forward_baseline: Option<f64>,
    own_forward_ceiling: Option<f64>,
}

impl Pretraining {
    fn read(pre: &RunConfig, cell: &Cell) -> Result<Self> {
        let checkpoint_dir = checkpoint::resolve(&pre.out_dir)?;
        let state = checkpoint::read_state(&checkpoint_dir)?;
        let dataset = Dataset::open(&pre.data.root)?;
        let counts = dataset.trial_counts(Split::Train);
        let trials: usize = dataset
            .sessions
            .iter()
            .zip(&counts)
            .filter(|(s, _)| pre.data.sessions.contains(&s.eid))
            .map(|(_, &n)| n)
            .sum();
        let own = if pre.eval.after_training {
            Some(read_json::<Report>(
                &pre.out_dir.join(mtm_trainer::report::RUN_REPORT),
            )?)
        } else {
            None
        };
        let own_score = |get: fn(&Report, Task) -> Option<f64>, task: Task| {
            own.as_ref().and_then(|r| get(r, task))
        };
        Ok(Self {
            trials: trials as u64,
            tokens: (trials * pre.model.n_bins) as u64,
            parameters: parameters(&checkpoint_dir.join("model.safetensors"))?,
            steps: state.step,
            trials_seen: state.step
                * (cell.batch_size * state.world_size * pre.train.accumulate) as u64,
            world_size: state.world_size as u64,
            own_co_smooth: own_score(Report::mean_of, Task::CoSmooth),
            own_co_smooth_baseline: own_score(Report::baseline_of, Task::CoSmooth),
            own_co_smooth_ceiling: own_score(Report::ceiling_of, Task::CoSmooth),
            own_forward: own_score(Report::mean_of, Task::Forward),
            own_forward_baseline: own_score(Report::baseline_of, Task::Forward),
            own_forward_ceiling: own_score(Report::ceiling_of, Task::Forward),
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

fn parameters(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(file
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
        .sum())
}

fn git_commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Every finished cell's row, written to the results table.
fn gather(sweep: &SweepConfig, cells: &[Cell]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for cell in cells {
        if let Some(row) = results::read_row(&sweep.cell_dir(cell))? {
            rows.push(row);
        }
    }
    std::fs::create_dir_all(&sweep.out_dir)?;
    results::write_table(&sweep.out_dir, &rows)?;
    Ok(rows)
}

fn slurm_array(sweep: &SweepConfig, cells: &[Cell], path: &Path) -> Result<ExitCode> {
    let pending: Vec<usize> = cells
        .iter()
        .filter(|c| status(sweep, c).map(|s| s != "done").unwrap_or(true))
        .map(|c| c.index)
        .collect();
    if pending.is_empty() {
        eprintln!("every cell is done; nothing to submit");
        return Ok(ExitCode::SUCCESS);
    }
    let base = mtm_trainer::config::RunConfig::load(&sweep.base, &[])?;
    if let Some(why) = mtm_cluster::slurm::unrunnable(&base.slurm) {
        eprintln!("warning: {why}");
    }
    let cwd = std::env::current_dir()?;
    let launch_dir = cwd.join(&sweep.out_dir).join("launch");
    let exe = std::env::current_exe()?;
    let sweep_path = cwd.join(path);
    // Each array task is one cell; its ranks are the base configuration's [slurm] request.
    let command = format!(
        "{} sweep --config {} --cell ${}",
        shell_quote(&exe.display().to_string()),
        shell_quote(&sweep_path.display().to_string()),
        mtm_cluster::slurm::ARRAY_TASK_ID_VAR
    );
    let name = sweep
        .out_dir
        .file_name()
        .map_or("mtm-sweep".into(), |n| n.to_string_lossy().into_owned());
    let script = sbatch_script(
        &base.slurm,
        &name,
        &cwd.display().to_string(),
        &launch_dir.display().to_string(),
        &command,
        &pending,
    );
    std::fs::create_dir_all(&launch_dir)?;
    let script_path = launch_dir.join(format!("{name}.sbatch"));
    std::fs::write(&script_path, &script)?;
    print!("{script}");
    eprintln!(
        "wrote {} ({} array tasks); submit with: sbatch {0}",
        script_path.display(),
        pending.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Each finished cell's activity scores per held-out session, from its fine-tuning report
/// (the results table keeps their mean).
fn held_out_scores(sweep: &SweepConfig, cells: &[Cell], rows: &[Row]) -> Result<Vec<HeldOutScore>> {
    let mut out = Vec::new();
    for cell in cells
        .iter()
        .filter(|c| rows.iter().any(|r| r.run_id == c.id))
    {
        let path = sweep.finetune_dir(cell).join(FINETUNE_REPORT);
        let report = read_json::<FinetuneReport>(&path)?.report;
        for session in &report.sessions {
            for result in &session.tasks {
                let checked = CHECKED.iter().find(|(_, task)| *task == result.task);
                if let (Some(&(metric, _)), Some(value)) = (checked, result.score.headline()) {
                    out.push(HeldOutScore {
                        run_id: cell.id.clone(),
                        eid: session.eid.clone(),
                        metric,
                        value,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn report(path: &Path) -> Result<ExitCode> {
    let (sweep, _, _) = SweepConfig::load(path)?;
    let cells = sweep.cells();
    let rows = gather(&sweep, &cells)?;
    if rows.is_empty() {
        bail!(
            "no finished cells under {}; run `mtm sweep --config {}` first",
            sweep.out_dir.display(),
            path.display()
        );
    }
    let budget = sweep.budget.describe();
    println!("pretraining budget: {budget}\n");
    let held_out = held_out_scores(&sweep, &cells, &rows)?;
    let text = mtm_sweep::report::write(&sweep.out_dir, &rows, &held_out, &budget)?;
    println!("{}", text.table);
    for line in &text.fits {
        println!("{line}");
    }
    println!();
    for line in &text.checks {
        println!("{line}");
    }
    eprintln!(
        "{} of {} cells; summary.csv, summary.md, fits.json and plots/ (SVG, PNG) in {}",
        rows.len(),
        cells.len(),
        sweep.out_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
