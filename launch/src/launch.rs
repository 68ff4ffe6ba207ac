//! `mtm launch slurm`: the batch script of a run, printed, written or submitted.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mtm_cluster::slurm::{sbatch_script, shell_quote};
use mtm_trainer::config::{DeviceKind, RunConfig};

/// Launchers.
#[derive(Subcommand, Debug)]
pub enum LaunchCommand {
    /// Write the sbatch script that runs `mtm train` on a Slurm allocation described by the
    /// configuration's [slurm] table (nodes, tasks and GPUs per node, CPUs per task, time,
    /// partition, account, preemption signal, requeue, srun or mpirun).
    ///
    /// The script asks Slurm for SIGUSR1 `slurm.signal_seconds` before the time limit and
    /// forwards it to the ranks, which finish their step, checkpoint and exit; with
    /// `slurm.requeue` the job requeues itself and the same command resumes from the
    /// checkpoint. The resolved configuration is written beside the script, so later edits
    /// of the original do not change a queued job.
    Slurm(SlurmArgs),
}

/// Arguments of `mtm launch slurm`.
#[derive(Args, Debug)]
pub struct SlurmArgs {
    /// The run's TOML configuration.
    #[arg(long)]
    config: PathBuf,
    /// Override a configuration value (as in `mtm train`), e.g. `--set slurm.nodes=4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Print the script and write nothing.
    #[arg(long, conflicts_with = "submit")]
    dry_run: bool,
    /// Submit the script with `sbatch` after writing it.
    #[arg(long)]
    submit: bool,
}

/// Runs a launch command.
pub fn run(command: LaunchCommand) -> Result<ExitCode> {
    match command {
        LaunchCommand::Slurm(args) => slurm(args),
    }
}

fn slurm(args: SlurmArgs) -> Result<ExitCode> {
    let config = RunConfig::load(&args.config, &args.overrides)?;
    let request = &config.slurm;
    let problems = request.problems();
    if !problems.is_empty() {
        bail!("{}: {}", args.config.display(), problems.join("; "));
    }
    match (request.gpus_per_node > 0, config.distributed.device) {
        (true, DeviceKind::Cpu) => bail!(
            "{}: slurm.gpus_per_node = {} but distributed.device = \"cpu\"; set distributed.device = \"cuda\" (and build with --features cuda) or request no GPUs",
            args.config.display(),
            request.gpus_per_node
        ),
        (false, DeviceKind::Cuda) => bail!(
            "{}: distributed.device = \"cuda\" needs slurm.gpus_per_node",
            args.config.display()
        ),
        _ => {}
    }
    // Writing the script is harmless; submitting a job that cannot run is not.
    if let Some(why) = mtm_cluster::slurm::unrunnable(request) {
        if args.submit {
            bail!("{}: {why}", args.config.display());
        }
        eprintln!("warning: {why}");
    }
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let out_dir = cwd.join(&config.out_dir);
    let launch_dir = out_dir.join("launch");
    let job_name = if request.job_name.is_empty() {
        config
            .out_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "mtm".into())
    } else {
        request.job_name.clone()
    };
    let resolved = launch_dir.join("config.toml");
    let exe = std::env::current_exe().context("locating the mtm binary")?;
    let command = format!(
        "{} train --config {}",
        shell_quote(&exe.display().to_string()),
        shell_quote(&resolved.display().to_string())
    );
    let script = sbatch_script(
        request,
        &job_name,
        &cwd.display().to_string(),
        &launch_dir.display().to_string(),
        &command,
        &[],
    );
    if args.dry_run {
        print!("{script}");
        eprintln!(
            "(dry run: nothing written; the script would be {}/{job_name}.sbatch)",
            launch_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&launch_dir)
        .with_context(|| format!("creating {}", launch_dir.display()))?;
    std::fs::write(&resolved, config.to_toml())
        .with_context(|| format!("writing {}", resolved.display()))?;
    let script_path = launch_dir.join(format!("{job_name}.sbatch"));
    std::fs::write(&script_path, &script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    eprintln!(
        "wrote {} ({} node(s) x {} rank(s), {}; starts with {})",
        script_path.display(),
        request.nodes,
        request.tasks_per_node,
        if request.gpus_per_node > 0 {
            format!("{} GPU(s) per node", request.gpus_per_node)
        } else {
            format!("{} CPU(s) per rank", request.cpus_per_task)
        },
        request.starter.describe()
    );
    if args.submit {
        print!("{}", mtm_cluster::slurm::submit(&script_path)?);
    } else {
        eprintln!("submit with: sbatch {}", script_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
