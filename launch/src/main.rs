//! `mtm`: train foundation models of neural population activity with multi-task masking.
//!
//! A thin binary: argument parsing, progress display and error reporting. The work is done
//! by the library crates.

mod bench;
mod bwb;
mod data;
mod finetune;
mod ingest;
mod launch;
mod sweep;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Multi-task-masked foundation models of neural population activity (IBL Neuropixels).
///
/// Datasets are folders (or s3://, gs://, az:// prefixes) of sessions in the layout the MtM
/// authors published: `{eid}_aligned/data/{train,val,test}-*.parquet`. Start with
/// `mtm synth --out data/synthetic` and `mtm data inspect data/synthetic`.
///
/// The science (data layout, model, masking schemes, metrics, protocol) is written down in
/// the repository's `docs/science.md`; "spec §N" below refers to its sections.
///
/// Logging: set MTM_LOG (e.g. `MTM_LOG=debug`). Object-store credentials and endpoints come
/// from the standard AWS_*, GOOGLE_* and AZURE_* environment variables; MTM_S3_ANONYMOUS
/// names S3 buckets read without credentials (e.g. `brain-wide-bench`).
#[derive(Parser, Debug)]
#[command(name = "mtm", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate synthetic IBL-like sessions in the published Parquet layout.
    ///
    /// Sessions have 3-8 real Allen regions, hundreds of units and 150-1000 trials split
    /// 70/10/20, with spikes driven by shared task latents and region-private latents.
    /// The same seed always gives the same dataset.
    Synth(data::SynthArgs),
    /// Build datasets from raw recordings.
    #[command(subcommand)]
    Ingest(ingest::IngestCommand),
    /// Look at and validate datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train NDT1 with multi-task masking from a TOML configuration.
    ///
    /// Writes config.toml (resolved), metrics.jsonl, metrics.csv, checkpoints/ and, when
    /// eval.after_training is set, eval-test.json into the run's out_dir. Start with
    /// `mtm train --config configs/quickstart.toml`.
    ///
    /// Started under `mpirun` or `srun` it trains data-parallel (see [distributed]).
    /// SIGUSR1, SIGTERM or Ctrl-C stop it after the current step with a checkpoint (exit
    /// status 75); started again with the same configuration, it resumes from its newest
    /// checkpoint.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint (spec §4): co-smoothing, forward prediction, intra- and
    /// inter-region bits per spike, choice and whisker decoding.
    ///
    /// Prints a table in the paper's column order and writes a JSON report with both bits
    /// per spike conventions (per-unit mean and NLB pooled), chance levels and pass counts.
    Eval(train::EvalArgs),
    /// Fine-tune a pretrained model on held-out sessions (the paper's Table 2), or train
    /// them from scratch as the baseline.
    ///
    /// For each held-out session: a new stitcher, head and session token; every shared
    /// weight copied by name from the pretrained checkpoint (reported in
    /// {out_dir}/{eid}/load-report.json); training as configured (all weights, or only the
    /// new ones with finetune.freeze_backbone); then the full evaluation. Prints and writes
    /// {out_dir}/finetune-report.json: one row per session and the mean.
    Finetune(finetune::FinetuneArgs),
    /// Export a checkpoint for use without mtm: plain tensor names in PyTorch's layout
    /// (model.safetensors), config.json (architecture, sessions, regions, prompt order,
    /// the forward pass), MODEL_CARD.md, and reference.safetensors (an input and the
    /// log-rates mtm computes for it). `mtm eval --checkpoint EXPORT` reads it back.
    Export(finetune::ExportArgs),
    /// Write a model's predictions as a benchmark submission: `--bwb DIR` writes
    /// BrainWideBench's TS2 (co-smoothing and forecasting on its evaluation sessions) in
    /// the layout `ibl_bwb_eval` scores, one file per session, task and training seed.
    /// Reads BWB's HDF5 files (feature `bwb`).
    ExportPredictions(bwb::ExportPredictionsArgs),
    /// Scaling sweeps: pretrain on 1, 2, 4, ... sessions, fine-tune on held-out sessions,
    /// evaluate, tabulate (CSV, Parquet); `mtm sweep report` fits power laws and plots.
    ///
    /// Cells run one after another (or as a Slurm job array with --slurm); finished cells
    /// are skipped, an interrupted one resumes from its checkpoint.
    Sweep(sweep::SweepArgs),
    /// Start runs on a cluster (Slurm).
    #[command(subcommand)]
    Launch(launch::LaunchCommand),
    /// Measure throughput (not a test: numbers to read and report).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Redraw a run's training curves into RUN/plots/ (loss with validation and each unit's
    /// mean time course, learning rate, gradient norm) from its metrics.jsonl; training
    /// draws them itself at every validation.
    Plot {
        /// The run folder (holds metrics.jsonl).
        run: std::path::PathBuf,
    },
}

/// Training allocates and frees activation-sized buffers every step; glibc's malloc hands
/// buffers that large back to the kernel each time, and page faults then cost ~20 % of a
/// step on CPU. mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`, v3 `enum mi_option_e`), for which
/// libmimalloc-sys names no constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel (unless the user chose
/// otherwise with `MIMALLOC_PURGE_DELAY`). A training step frees and allocates the same
/// activation-sized buffers again and again; memory returned in between faults and is
/// zeroed again on reuse, 12-16 % of a paper-size CPU step (`mtm bench step`, measured
/// both ways). The cost: a process keeps its peak memory, which training reaches every
/// step anyway.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options, which its documentation allows
        // at any time from any thread; no pointer is passed.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
        };
    }
}

/// Our own messages at info; storage clients' retries only when they give up.
const DEFAULT_LOG: &str = "info,object_store=warn,hyper=warn,reqwest=warn";

/// The error and its causes, leaving out causes whose text an outer message already shows
/// (storage errors repeat their sources in their own messages).
fn report(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MTM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: Slurm logs and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Plot { run } => mtm_trainer::plots::training_curves(&run)
            .map_err(anyhow::Error::msg)
            .map(|written| {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }),
        Command::Synth(args) => data::synth(args),
        Command::Data(command) => data::run(command),
        Command::Ingest(command) => ingest::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Train(args) => train::train(args),
        Command::Eval(args) => train::evaluate(args),
        Command::Finetune(args) => finetune::finetune(args),
        Command::Export(args) => finetune::export(args),
        Command::ExportPredictions(args) => bwb::export_predictions(args),
        Command::Launch(command) => launch::run(command),
        Command::Sweep(args) => sweep::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number is mimalloc's purge delay: its default (1,000 ms in v3) before,
    /// and "never" after.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // The user's setting wins; nothing to check.
        }
        // SAFETY: reads integer options; no pointer is passed.
        #[allow(unsafe_code)]
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000, "mimalloc's default purge delay");
        keep_freed_memory();
        assert_eq!(get(), -1);
    }
}
