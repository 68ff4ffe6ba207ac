//! `mtm ingest …`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mtm_ingest::{IngestOptions, IngestReport, RegionLevel, SessionArg};

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
    /// Convert BrainWideBench session files (`{eid}.h5`) into the published layout.
    ///
    /// --from is a folder or an object store URL: a single `.h5` file, a folder of them,
    /// or BWB's bucket layout (`{build}/ibl_brain_wide_bench_2026/{pretrain|eval}/`), for
    /// example `s3://brain-wide-bench` with MTM_S3_ANONYMOUS=brain-wide-bench (the public
    /// bucket takes no credentials: requests to the buckets that variable names go
    /// unsigned, every other bucket keeps your AWS_* credentials; every s3:// location in
    /// mtm honours it, and AWS_SKIP_SIGNATURE=true drops signing everywhere). Trials are
    /// filtered, cut and binned exactly as `mtm ingest alf` does; BWB's own train/val/test
    /// domains are kept (a trial whose window straddles two is dropped and counted), and
    /// the file's /brainset and /provenance attributes go into each Parquet file's
    /// key-value metadata. Files in an object store are fetched to $TMPDIR one per job.
    /// A file that fails is reported by name and the others still written. The sessions
    /// written are added to the manifest `{out}/bwb-{pretrain|eval}.txt`, which names
    /// exactly that set as a dataset root (`data.root = ".../bwb-pretrain.txt"`). Needs a binary
    /// built with `--features bwb` (HDF5: Debian's libhdf5-dev and pkg-config).
    Bwb(BwbArgs),
}

/// Arguments of `mtm ingest bwb`.
#[derive(Args, Debug)]
pub struct BwbArgs {
    /// Where the session files are: a `.h5` file, a folder of them, or a BWB bucket root
    /// (a path, or an s3://, gs://, az:// URL).
    #[arg(long)]
    from: String,
    /// Which session set to read under a bucket root.
    #[arg(long, value_enum, default_value_t = SessionSet::Pretrain)]
    split: SessionSet,
    /// Which build to read under a bucket root.
    #[arg(long, value_enum, default_value_t = UnitBuild::Selected)]
    units: UnitBuild,
    /// Where each trial's train/val/test assignment comes from.
    #[arg(long, value_enum, default_value_t = SplitSource::File)]
    splits: SplitSource,
    /// Only these sessions (eids, comma-separated or repeated); default: every file found.
    #[arg(long = "eid", value_delimiter = ',')]
    eids: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// BWB's two session sets (`--split`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SessionSet {
    /// The 423 pretraining sessions.
    Pretrain,
    /// The 29 evaluation sessions from held-out animals.
    Eval,
}

/// BWB's two builds of every session (`--units`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UnitBuild {
    /// `selected_units/`: units passing BWB's rate and QC filters.
    Selected,
    /// `all_units/`: every sorted unit.
    All,
}

/// Where trial splits come from (`--splits`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SplitSource {
    /// The file's own train/val/test domains (suite TS2's, else its pretraining split).
    File,
    /// mtm's seeded 70/10/20 shuffle, as `mtm ingest alf` assigns.
    Shuffle,
}

/// The options `mtm ingest alf` and `mtm ingest bwb` share.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Dataset root to write to: a folder, or an s3://, gs://, az:// URL.
    #[arg(long)]
    out: String,
    /// Region labels: allen (acronym of the channel's structure), beryl or cosmos.
    #[arg(long, default_value = "allen")]
    regions: RegionLevel,
    /// Keep only units that pass IBL QC (label == 1).
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

impl CommonArgs {
    fn options(&self) -> IngestOptions {
        IngestOptions {
            region_level: self.regions,
            good_only: self.good_only,
            min_rate_hz: self.min_rate,
            seed: self.seed,
            rows_per_group: self.rows_per_group,
        }
    }

    fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// Arguments of `mtm ingest alf`.
#[derive(Args, Debug)]
pub struct AlfArgs {
    /// A session folder (the one holding `alf/`), as PATH or EID=PATH. Repeat for more.
    /// Without EID, the folder's name is used when it is a UUID, else
    /// `{subject}_{date}_{number}` from a ONE cache path `…/lab/Subjects/subject/date/number`.
    #[arg(long = "session", required = true)]
    sessions: Vec<SessionArg>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs a `mtm ingest` subcommand.
pub fn run(command: IngestCommand) -> Result<ExitCode> {
    match command {
        IngestCommand::Alf(args) => {
            let options = args.common.options();
            let bar = progress_bar(args.sessions.len());
            let start = Instant::now();
            let results = mtm_ingest::ingest(
                &args.sessions,
                &args.common.out,
                &options,
                args.common.jobs(),
                &|result| tick(&bar, result),
            )?;
            bar.finish_and_clear();
            Ok(summarise(&results, &args.common.out, start))
        }
        IngestCommand::Bwb(args) => bwb(args),
    }
}

#[cfg(feature = "bwb")]
fn bwb(args: BwbArgs) -> Result<ExitCode> {
    use mtm_ingest::bwb::{self, Build, Part, Splits};
    let part = match args.split {
        SessionSet::Pretrain => Part::Pretrain,
        SessionSet::Eval => Part::Eval,
    };
    let build = match args.units {
        UnitBuild::Selected => Build::Selected,
        UnitBuild::All => Build::All,
    };
    let splits = match args.splits {
        SplitSource::File => Splits::File,
        SplitSource::Shuffle => Splits::Shuffle,
    };
    let mut sources = bwb::list(&args.from, part, build)?;
    if !args.eids.is_empty() {
        let stem = |name: String| name.trim_end_matches(".h5").to_string();
        let found: Vec<String> = sources.iter().map(|s| stem(s.name())).collect();
        if let Some(missing) = args.eids.iter().find(|e| !found.contains(e)) {
            anyhow::bail!("--eid {missing}: no {missing}.h5 under {}", args.from);
        }
        sources.retain(|s| args.eids.contains(&stem(s.name())));
    }
    eprintln!("{} session files under {}", sources.len(), args.from);
    let options = args.common.options();
    let bar = progress_bar(sources.len());
    let start = Instant::now();
    let results = bwb::ingest(
        &sources,
        &args.common.out,
        &options,
        splits,
        args.common.jobs(),
        &|result| tick(&bar, result),
    )?;
    bar.finish_and_clear();
    let code = summarise(&results, &args.common.out, start);
    let written: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|r| r.eid.clone()))
        .collect();
    if !written.is_empty() {
        let (manifest, listed) = bwb::update_manifest(&args.common.out, part, &written)?;
        println!(
            "{listed} sessions listed in {} (a dataset root of its own: data.root)",
            manifest.url()
        );
    }
    Ok(code)
}

#[cfg(not(feature = "bwb"))]
fn bwb(_: BwbArgs) -> Result<ExitCode> {
    anyhow::bail!(
        "this mtm was built without BrainWideBench support; rebuild with \
         `cargo build --release --features bwb` (needs HDF5: `apt install libhdf5-dev pkg-config`)"
    )
}

fn progress_bar(len: usize) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} ingest [{bar:30}] {pos}/{len} sessions ({elapsed}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    )
}

fn tick(bar: &ProgressBar, result: &mtm_ingest::Result<IngestReport>) {
    if let Ok(report) = result {
        bar.set_message(report.eid.clone());
    }
    bar.inc(1);
}

/// Prints a row per session and a total line; the exit code says whether any failed.
fn summarise(results: &[mtm_ingest::Result<IngestReport>], out: &str, start: Instant) -> ExitCode {
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{:<38} {:>11} {:>8} {:>6} {:>5} {:>5} {:>5} {:>9}  dropped (nan/no-choice/rt/split)",
        "eid", "units kept", "trials", "kept", "train", "val", "test", "spikes"
    );
    let mut failed = 0;
    let mut spikes = 0;
    for result in results {
        match result {
            Ok(r) => {
                spikes += r.spikes_read;
                println!(
                    "{:<38} {:>5}/{:<5} {:>8} {:>6} {:>5} {:>5} {:>5} {:>9}  {}/{}/{}/{}",
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
                    r.dropped_reaction_time,
                    r.dropped_split
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
        "{} of {} sessions written to {out} in {seconds:.1}s ({:.2} M spikes/s)",
        results.len() - failed,
        results.len(),
        spikes as f64 / seconds / 1e6
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
