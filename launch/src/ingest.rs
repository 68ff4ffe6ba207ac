//! `mtm ingest …`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mtm_ingest::{IngestOptions, RegionLevel, SessionArg};

/// Sources to build datasets from.
#[derive(Subcommand, Debug)]
pub enum IngestCommand {
    /// Convert IBL sessions from the ONE cache (ALF files) into the published layout.
    ///
    /// Reads every probe's spikes and clusters, the trials table, wheel and camera motion
    /// energy; keeps trials with no NaN event time, a choice, and a reaction time in
    /// [0.08, 2.0] s; bins spikes into 100 bins of 20 ms from 0.5 s before stimulus onset;
    /// interpolates behaviour at the right edge of each bin; labels units with the Allen
    /// region of their peak channel; splits trials 70/10/20 with a seeded shuffle; and
    /// writes `{eid}_aligned/data/{split}-00000-of-00001.parquet` under --out. Sessions
    /// convert in parallel; a session that fails is reported and the others still written.
    /// In a local folder a session appears only once its three splits are written (staged
    /// in `.partial-{eid}`), so Ctrl-C never leaves one that looks whole.
    Alf(AlfArgs),
}

/// Arguments of `mtm ingest alf`.
#[derive(Args, Debug)]
pub struct AlfArgs {
    /// A session folder (the one holding `alf/`), as PATH or EID=PATH. Repeat for more.
    /// Without EID, the folder's name is used when it is a UUID, else
    /// `{subject}_{date}_{number}` from a ONE cache path `…/lab/Subjects/subject/date/number`.
    #[arg(long = "session", required = true)]
    sessions: Vec<SessionArg>,
    /// Dataset root to write to: a folder, or an s3://, gs://, az:// URL.
    #[arg(long)]
    out: String,
    /// Region labels: allen (acronym of the channel's structure), beryl or cosmos.
    #[arg(long, default_value = "allen")]
    regions: RegionLevel,
    /// Keep only units that pass IBL QC (clusters.metrics.pqt label == 1).
    #[arg(long)]
    good_only: bool,
    /// Keep only units whose mean rate over the recording is at least this (Hz).
    #[arg(long)]
    min_rate: Option<f64>,
    /// Seed of the train/val/test shuffle (mixed with each eid).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sessions converted at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Trials per Parquet row group.
    #[arg(long, default_value_t = 64)]
    rows_per_group: usize,
}

/// Runs a `mtm ingest` subcommand.
pub fn run(command: IngestCommand) -> Result<ExitCode> {
    let IngestCommand::Alf(args) = command;
    let options = IngestOptions {
        region_level: args.regions,
        good_only: args.good_only,
        min_rate_hz: args.min_rate,
        seed: args.seed,
        rows_per_group: args.rows_per_group,
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = ProgressBar::new(args.sessions.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} ingest [{bar:30}] {pos}/{len} sessions ({elapsed}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let results = mtm_ingest::ingest(&args.sessions, &args.out, &options, jobs, &|result| {
        if let Ok(report) = result {
            bar.set_message(report.eid.clone());
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{:<38} {:>11} {:>8} {:>6} {:>5} {:>5} {:>5} {:>9}  dropped (nan/no-choice/rt)",
        "eid", "units kept", "trials", "kept", "train", "val", "test", "spikes"
    );
    let mut failed = 0;
    let mut spikes = 0;
    for result in &results {
        match result {
            Ok(r) => {
                spikes += r.spikes_read;
                println!(
                    "{:<38} {:>5}/{:<5} {:>8} {:>6} {:>5} {:>5} {:>5} {:>9}  {}/{}/{}",
                    r.eid,
                    r.units.1,
                    r.units.0,
                    r.trials_total,
                    r.splits.iter().sum::<usize>(),
                    r.splits[0],
                    r.splits[1],
                    r.splits[2],
                    r.spikes_read,
                    r.dropped_nan,
                    r.dropped_no_choice,
                    r.dropped_reaction_time
                );
                for missing in &r.missing {
                    tracing::warn!("{}: missing {missing}", r.eid);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    println!(
        "{} of {} sessions written to {} in {seconds:.1}s ({:.1} M spikes/s)",
        results.len() - failed,
        results.len(),
        args.out,
        spikes as f64 / seconds / 1e6
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
