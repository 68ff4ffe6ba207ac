//! `mtm train` and `mtm eval`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use mtm_cluster::slurm::SlurmAllocation;
use mtm_cluster::{Fabric, Topology};
use mtm_dataloader::{Dataset, Split};
use mtm_trainer::artifact::Artifact;
use mtm_trainer::checkpoint;
use mtm_trainer::config::{DeviceKind, RunConfig, Task};
use mtm_trainer::data::prepare_data;
use mtm_trainer::eval::{self, EvalOptions};
use mtm_trainer::metrics_log::StepRecord;
use mtm_trainer::placement::Placement;
use mtm_trainer::report::{self, Report};
use mtm_trainer::train::{self, Observer, RunEnd, Trainer};

/// Arguments of `mtm train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The run's TOML configuration (see configs/). Optional with --resume, which reads the
    /// configuration stored in the checkpoint.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a configuration value, e.g. `--set train.steps=200 --set
    /// masking.scheme=temporal --set data.root=s3://bucket/ibl --set out_dir=runs/x`.
    /// Repeatable; values are TOML (bare words are strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue a run exactly where its newest checkpoint left it: give the run folder,
    /// its checkpoints/ folder or one checkpoint folder.
    #[arg(long, value_name = "RUN_OR_CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Skip the evaluation at the end even when the configuration asks for it.
    #[arg(long)]
    no_eval: bool,
}

/// Arguments of `mtm eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint folder, a run folder (its newest checkpoint), or an `mtm export`
    /// folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Whose evaluation: `mtm`, the paper's (spec §4) on a dataset's test trials; `bwb`,
    /// BrainWideBench's suite TS2 (co-smoothing and forecasting on 1 s windows of its
    /// evaluation sessions, Poisson D² and bits per spike, as `ibl_bwb_eval` scores them),
    /// which reads BWB's HDF5 files given as --data (feature `bwb`) and writes
    /// eval-bwb-ts2.json.
    #[arg(long, value_enum, default_value_t = Protocol::Mtm)]
    protocol: Protocol,
    /// Dataset to evaluate on (default: the one the run trained on). With --protocol bwb:
    /// BWB's evaluation files (an `{eid}.h5`, a folder of them, or the bucket root).
    #[arg(long)]
    data: Option<String>,
    /// Split to score.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Tasks, comma-separated: co-smooth, forward, intra, inter, choice, whisker
    /// (default: the run's eval.tasks).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<Task>,
    /// Sessions by eid, comma-separated (default: all the checkpoint knows).
    #[arg(long, value_delimiter = ',')]
    sessions: Vec<String>,
    /// Write per-task log-rates, counts and scored masks (safetensors) under this folder.
    #[arg(long)]
    save_predictions: Option<PathBuf>,
    /// Draw each session's pictures under this folder (SVG and PNG): `{eid}/rasters`, the
    /// trial-averaged rates of the largest region as observed and as predicted under
    /// inter- and intra-region masking (needs both tasks), and `{eid}/metrics`, the four
    /// activity metrics beside the baseline and the ceiling. `mtm train` draws them into
    /// the run's `plots/`.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Trial copies per forward pass in the leave-one-out tasks.
    #[arg(long)]
    rows_per_pass: Option<usize>,
    /// Units held out together in co-smoothing and intra-region (1: exact leave-one-out;
    /// 8: the official code's grouping, 8x cheaper). Default: the run's eval.heldout_group.
    #[arg(long)]
    heldout_group: Option<usize>,
    /// Skip the smoothing + Poisson GLM baseline (fit on the training split and scored on
    /// the same entries as the model; printed under each session's row).
    #[arg(long)]
    no_baseline: bool,
    /// Where to write the JSON report (default: eval-{split}.json beside the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Writes one line to stderr in a single write. `eprintln!` writes its pieces one by one,
/// and under `mpirun` the other ranks' log lines, which share the stream, land between them.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut text = line.to_string();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The evaluation protocols `mtm eval` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The paper's evaluation (spec §4).
    Mtm,
    /// BrainWideBench's suite TS2.
    Bwb,
}

/// The progress bar on a terminal; plain lines every `log_every` steps otherwise (Slurm
/// logs, pipes), where indicatif draws nothing.
pub(crate) struct Bar {
    pub(crate) bar: ProgressBar,
    log_every: u64,
}

impl Bar {
    /// A training progress bar over `total_steps`.
    pub(crate) fn new(total_steps: u64, log_every: u64) -> Self {
        let bar = ProgressBar::new(total_steps).with_style(
            ProgressStyle::with_template(
                "{spinner} train [{bar:30}] {pos}/{len} steps {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Self {
            bar,
            log_every: log_every.max(1),
        }
    }
}

impl Observer for Bar {
    fn start(&mut self, start_step: u64, total_steps: u64) {
        self.bar.set_length(total_steps);
        self.bar.set_position(start_step);
        self.bar.reset_eta();
    }

    fn step(&mut self, r: &StepRecord) {
        if self.bar.is_hidden() && r.step.is_multiple_of(self.log_every) {
            eprintln!(
                "step {}/{}: loss {:.4} lr {:.2e} {:.0} trials/s",
                r.step,
                self.bar.length().unwrap_or(0),
                r.loss,
                r.lr,
                r.trials_per_s
            );
        }
        self.bar.set_position(r.step);
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} trials/s",
            r.loss, r.lr, r.trials_per_s
        ));
    }

    fn note(&mut self, message: &str) {
        if self.bar.is_hidden() {
            eprintln!("{message}");
        } else {
            self.bar.println(message);
        }
    }
}

/// `mtm train`.
pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let (config, resume) = match (&args.config, &args.resume) {
        (_, Some(path)) => {
            let dir = checkpoint::resolve(path)?;
            let stored = checkpoint::read_config(&dir)?;
            let config = match &args.config {
                Some(file) => RunConfig::load(file, &args.overrides)?,
                None => RunConfig::parse(
                    &stored.to_toml(),
                    &dir.display().to_string(),
                    &args.overrides,
                )?,
            };
            let differences = config.run_differences(&stored);
            if !differences.is_empty() {
                bail!(
                    "{} was trained with another {} than the configuration given; resume with the stored one (leave out --config)",
                    dir.display(),
                    differences.join(", ")
                );
            }
            (config, Some(dir))
        }
        (Some(file), None) => (RunConfig::load(file, &args.overrides)?, None),
        (None, None) => bail!("give --config FILE (see configs/) or --resume RUN_DIR"),
    };
    let resume = match resume {
        Some(dir) => Some(dir),
        None => automatic_resume(&config)?,
    };
    if let Some(alloc) = SlurmAllocation::from_env() {
        let problems = alloc.mismatches(&config.slurm);
        if !problems.is_empty() {
            bail!(
                "Slurm job {} does not match the configuration's [slurm] table: {}. Submit with `mtm launch slurm --config ...`, or make [slurm] describe the allocation",
                alloc.job_id,
                problems.join("; ")
            );
        }
    }
    let (placement, topology) = placement(&config)?;
    let rank = topology.rank;
    let world = topology.world_size;
    let result = train_as(args, config, resume, placement, &topology);
    if world > 1 {
        return result.with_context(|| format!("rank {rank} of {world}"));
    }
    result
}

/// A run started again in a folder that holds a checkpoint continues from it (after a
/// preemption, a time limit, a crash), provided it is the same run: same model, seed,
/// data and masking. Anything else is refused rather than mixed.
fn automatic_resume(config: &RunConfig) -> Result<Option<PathBuf>> {
    let checkpoints = config.out_dir.join("checkpoints");
    if !checkpoints.join("latest").exists() {
        return Ok(None);
    }
    let dir = checkpoint::resolve(&checkpoints)?;
    let stored = checkpoint::read_config(&dir)?;
    let differences = config.run_differences(&stored);
    if !differences.is_empty() {
        bail!(
            "{} already holds a run with another {}; choose another out_dir (--set out_dir=...) or continue it with --resume {}",
            config.out_dir.display(),
            differences.join(", "),
            config.out_dir.display()
        );
    }
    eprintln!(
        "{} holds a checkpoint of this run: resuming from {}",
        config.out_dir.display(),
        dir.display()
    );
    Ok(Some(dir))
}

/// SIGUSR1 (Slurm's warning before the time limit), SIGTERM (preemption, scancel) and
/// SIGINT (Ctrl-C) ask the run to stop after the current step with a checkpoint; a second
/// SIGINT ends the process at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&flag))?;
    for signal in [SIGUSR1, SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// After training: SIGINT and SIGTERM end the process at once (status 130, 143), as they
/// do in every command that has nothing to save. Without this the training handlers would
/// keep swallowing the first Ctrl-C during the final evaluation. The report is written
/// only when evaluation completes, so a stop leaves no partial one.
fn stop_at_once_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let now = Arc::new(AtomicBool::new(true));
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&now))?;
    signal_hook::flag::register_conditional_shutdown(SIGTERM, 143, now)?;
    Ok(())
}

/// Exit status of a run stopped by a signal after writing its checkpoint (EX_TEMPFAIL: run
/// the same command again to continue).
pub(crate) const STOPPED_EXIT_CODE: u8 = 75;

/// After a stop: requeue the Slurm job when the batch script asked for it (rank 0 only).
fn after_stop(step: u64, lead: bool) -> ExitCode {
    if lead {
        eprintln!(
            "stopped after step {step} with a checkpoint; the same command continues the run"
        );
        if let Some(line) = mtm_cluster::slurm::requeue_if_asked() {
            eprintln!("{line}");
        }
    }
    ExitCode::from(STOPPED_EXIT_CODE)
}

/// The launcher's topology and the collective `mtm_cluster` opens for it.
fn placement(config: &RunConfig) -> Result<(Placement, Topology)> {
    let topology = Topology::from_env()?;
    let timeout = config.distributed.timeout();
    let fabric = match config.distributed.device {
        // wgpu exposes no device memory to MPI or NCCL: its gradients go through the host.
        DeviceKind::Cpu | DeviceKind::Wgpu => Fabric::Host,
        DeviceKind::Cuda => Fabric::Gpu,
    };
    let comm = mtm_cluster::connect(&topology, timeout, fabric)?;
    if topology.rank == 0 && topology.world_size > 1 {
        eprintln!(
            "{} ranks over {} node(s), {} per node ({:?} launcher); collectives: {} ({}), timeout {:.0} s",
            topology.world_size,
            topology.world_size.div_ceil(topology.local_size),
            topology.local_size,
            topology.source,
            comm.backend(),
            mtm_cluster::mpi_library_version().unwrap_or_default(),
            config.distributed.timeout_s
        );
    }
    Ok((
        Placement {
            comm,
            local_rank: topology.local_rank,
        },
        topology,
    ))
}

fn train_as(
    args: TrainArgs,
    config: RunConfig,
    resume: Option<PathBuf>,
    mut placement: Placement,
    topology: &Topology,
) -> Result<ExitCode> {
    let lead = topology.rank == 0;
    // Rank 0 generates a missing synthetic dataset while the others wait for it.
    let generated = if lead {
        prepare_data(&config)
    } else {
        Ok(false)
    };
    let generated_ok = generated.is_ok();
    let all = placement
        .comm
        .all_gather(&[f64::from(u8::from(generated_ok))])?;
    if generated? {
        eprintln!("generated the synthetic dataset at {}", config.data.root);
    }
    if all[0] == 0.0 {
        bail!("rank 0 could not generate the synthetic dataset");
    }
    let mut trainer = Trainer::with_placement(config.clone(), resume.as_deref(), placement)
        .with_context(|| format!("setting up the run in {}", config.out_dir.display()))?;
    trainer.set_stop_flag(stop_on_signals()?);
    if !lead {
        if let RunEnd::Stopped { step } = trainer.run(&mut train::Silent)? {
            return Ok(after_stop(step, false));
        }
        stop_at_once_on_signals()?;
        if config.eval.after_training && !args.no_eval && has_test_trials(&trainer) {
            // This rank scores its share of the sessions; rank 0 writes the report.
            let (model, dataset, mut comm) = for_evaluation(trainer);
            run_eval(&model, &dataset, &run_eval_options(&config), comm.as_mut())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sessions = trainer.sessions().len();
    say(format_args!(
        "training {} parameters on {} session{} of {} ({} masking), {} steps of {} trials ({} rank(s) x {} x {} accumulated){}",
        trainer.n_parameters(),
        sessions,
        if sessions == 1 { "" } else { "s" },
        config.data.root,
        config.masking.scheme.name(),
        trainer.plan().total_steps,
        trainer.plan().trials_per_step,
        topology.world_size,
        config.data.batch_size,
        config.train.accumulate,
        resume
            .as_ref()
            .map(|d| format!(", resuming at step {} from {}", trainer.step, d.display()))
            .unwrap_or_default(),
    ));
    let mut observer = Bar::new(trainer.plan().total_steps, config.train.log_every);
    if let RunEnd::Stopped { step } = trainer.run(&mut observer)? {
        observer.bar.abandon();
        return Ok(after_stop(step, true));
    }
    observer.bar.finish();
    eprintln!("run written to {}", config.out_dir.display());
    // Nothing reads the stop flag any more: from here Ctrl-C and SIGTERM end the process.
    stop_at_once_on_signals()?;
    if config.eval.after_training && !args.no_eval && !has_test_trials(&trainer) {
        eprintln!(
            "nothing to evaluate after training: none of the {sessions} sessions has test trials \
             (BrainWideBench's pretraining files have none); evaluate by fine-tuning on held-out \
             sessions (`mtm finetune`), or set eval.after_training = false"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if config.eval.after_training && !args.no_eval {
        let (model, dataset, mut comm) = for_evaluation(trainer);
        let options = run_eval_options(&config);
        let report = run_eval(&model, &dataset, &options, comm.as_mut())?;
        write_report(
            &report,
            &config.out_dir.join(mtm_trainer::report::RUN_REPORT),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether any session the run trained on has test trials to evaluate after training
/// (from the sessions' metadata: the same answer on every rank).
fn has_test_trials(trainer: &Trainer) -> bool {
    let dataset = trainer.dataset();
    trainer.sessions().iter().any(|spec| {
        dataset
            .sessions
            .iter()
            .any(|s| s.eid == spec.eid && s.trials(Split::Test) > 0)
    })
}

/// What the evaluation after training needs from the trainer: the weights, copied to the
/// CPU (evaluation runs there, wherever training ran), the dataset and the collective.
fn for_evaluation(
    trainer: Trainer,
) -> (
    mtm_trainer::model::Ndt,
    std::sync::Arc<Dataset>,
    Box<dyn mtm_cluster::Collective>,
) {
    let dataset = std::sync::Arc::clone(trainer.dataset());
    let model = trainer
        .model()
        .valid()
        .to_device(&burn::prelude::Device::flex());
    (model, dataset, trainer.into_collective())
}

/// The evaluation after training: the run's settings, pictures in the run folder.
fn run_eval_options(config: &RunConfig) -> EvalOptions {
    let mut options = EvalOptions::from_config(config);
    options.plots = Some(config.out_dir.join(mtm_trainer::plots::PLOTS_DIR));
    options
}

/// Evaluates, the sessions divided between the ranks of `comm`, with a progress bar on
/// rank 0 (counting its share).
pub(crate) fn run_eval(
    model: &mtm_trainer::model::Ndt,
    dataset: &Dataset,
    options: &EvalOptions,
    comm: &mut dyn mtm_cluster::Collective,
) -> Result<Report> {
    let shares = eval::Shares::new(model, dataset, options, comm.world_size())?;
    let total = shares.count(comm.rank()) * options.tasks.len();
    let bar = if comm.rank() == 0 {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    let bar = bar.with_style(
        ProgressStyle::with_template(
            "{spinner} eval [{bar:30}] {pos}/{len} tasks {msg} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut started = false;
    let report =
        eval::evaluate_shared(model, dataset, options, &shares, comm, &mut |eid, task| {
            if started {
                bar.inc(1);
            }
            started = true;
            bar.set_message(format!("{} {}", &eid[..eid.len().min(8)], task.name()));
        })?;
    bar.finish_and_clear();
    Ok(report)
}

pub(crate) fn write_report(report: &Report, path: &Path) -> Result<()> {
    println!(
        "{} split, {} masking: bits per spike (per-unit mean), choice accuracy and whisker R² (chance)\n{}",
        report.split,
        report.masking,
        report::table(report)
    );
    let json = serde_json::to_string_pretty(report).expect("reports serialise");
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

/// `mtm eval`.
pub fn evaluate(args: EvalArgs) -> Result<ExitCode> {
    if args.protocol == Protocol::Bwb {
        return crate::bwb::evaluate(crate::bwb::EvalRequest {
            checkpoint: &args.checkpoint,
            from: args.data.as_deref(),
            sessions: &args.sessions,
            windows_per_pass: args.rows_per_pass,
            out: args.out.as_deref(),
        });
    }
    let device = burn::prelude::Device::flex();
    let artifact = Artifact::open(&args.checkpoint)?;
    let model = artifact.model(&device)?;
    let Artifact { dir, config, .. } = artifact;
    let root = args
        .data
        .clone()
        .unwrap_or_else(|| config.data.root.clone());
    let dataset = Dataset::open(&root)?;
    let mut options = EvalOptions::from_config(&config);
    options.split = args.split;
    if !args.tasks.is_empty() {
        options.tasks = args.tasks.clone();
    }
    if let Some(rows) = args.rows_per_pass {
        options.rows_per_pass = rows;
    }
    if let Some(group) = args.heldout_group {
        options.heldout_group = group.max(1);
    }
    options.baseline = options.baseline && !args.no_baseline;
    options.sessions = args.sessions.clone();
    options.save_predictions = args.save_predictions.clone();
    options.plots = args.plots.clone();
    // Under mpirun the ranks divide the sessions; rank 0 prints and writes the report.
    let topology = Topology::from_env()?;
    let mut comm = mtm_cluster::connect(&topology, config.distributed.timeout(), Fabric::Host)
        .with_context(|| format!("rank {} of {}", topology.rank, topology.world_size))?;
    if topology.rank != 0 {
        run_eval(&model, &dataset, &options, comm.as_mut())
            .with_context(|| format!("rank {} of {}", topology.rank, topology.world_size))?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "evaluating {} on the {} split of {root}{}: {}",
        dir.display(),
        args.split.name(),
        if topology.world_size > 1 {
            format!(" over {} ranks", topology.world_size)
        } else {
            String::new()
        },
        options
            .tasks
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let report = run_eval(&model, &dataset, &options, comm.as_mut())?;
    let out = args
        .out
        .unwrap_or_else(|| dir.join(format!("eval-{}.json", args.split.name())));
    write_report(&report, &out)?;
    if let Some(p) = &args.save_predictions {
        eprintln!("predictions written under {}", p.display());
    }
    if let Some(p) = &args.plots {
        eprintln!("pictures written under {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
