//! `mtm synth` and `mtm data …`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mtm_dataloader::inspect::{self, Progress};
use mtm_dataloader::{Dynamics, SynthConfig, WriteOptions};

/// Parses `MIN..MAX` (or a single number) into a range.
pub fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let parse = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|e| format!("`{x}` is not a count: {e}"))
    };
    match s.split_once("..") {
        Some((lo, hi)) => Ok((parse(lo)?, parse(hi.trim_start_matches('='))?)),
        None => parse(s).map(|n| (n, n)),
    }
}

/// Arguments of `mtm synth`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Where to write: a folder path, file://, s3://, gs:// or az:// URL.
    #[arg(long)]
    out: String,
    /// Number of sessions.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Units per session, `MIN..MAX` (or one number).
    #[arg(long, default_value = "300..1000", value_parser = parse_range)]
    units: (usize, usize),
    /// Trials per session before the 70/10/20 split, `MIN..MAX`.
    #[arg(long, default_value = "150..1000", value_parser = parse_range)]
    trials: (usize, usize),
    /// Regions per session, `MIN..MAX`.
    #[arg(long, default_value = "3..8", value_parser = parse_range)]
    regions: (usize, usize),
    /// Trials per Parquet row group.
    #[arg(long, default_value_t = 64)]
    rows_per_group: usize,
    /// Leave out the optional `wheel-speed` column.
    #[arg(long)]
    no_wheel: bool,
    /// Standard deviation of a per-trial state shared by every unit of a session (constant
    /// within a trial; 0 leaves it out): trial-to-trial variability that only a model
    /// reading the whole trial can estimate well.
    #[arg(long, default_value_t = 0.0)]
    trial_state: f64,
    /// `independent` (task and region-private latents per session) or `shared`: one
    /// nonlinear dynamical system of interacting regions (with lags) that every session
    /// records part of through its own units, the benchmark where pretraining on more
    /// sessions should help a new one.
    #[arg(long, default_value = "independent", value_parser = parse_dynamics)]
    dynamics: Dynamics,
    /// The last this many sessions get `--data-poor-trials` trials instead of `--trials`.
    #[arg(long, default_value_t = 0)]
    data_poor_sessions: usize,
    /// Trials of each data-poor session, `MIN..MAX`.
    #[arg(long, default_value = "30..60", value_parser = parse_range)]
    data_poor_trials: (usize, usize),
}

fn parse_dynamics(s: &str) -> Result<Dynamics, String> {
    match s {
        "independent" => Ok(Dynamics::Independent),
        "shared" => Ok(Dynamics::Shared),
        other => Err(format!("`{other}`: expected independent or shared")),
    }
}

/// `mtm synth`.
pub fn synth(args: SynthArgs) -> Result<ExitCode> {
    let config = SynthConfig {
        sessions: args.sessions,
        seed: args.seed,
        units: args.units,
        trials: args.trials,
        regions: args.regions,
        wheel: !args.no_wheel,
        trial_state: args.trial_state,
        dynamics: args.dynamics,
        data_poor_sessions: args.data_poor_sessions,
        data_poor_trials: args.data_poor_trials,
        ..SynthConfig::default()
    };
    let bar = ProgressBar::new(config.sessions as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} synth [{bar:30}] {pos}/{len} sessions {msg} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut trials = 0;
    let options = WriteOptions {
        rows_per_group: args.rows_per_group,
        ..WriteOptions::default()
    };
    // A local folder appears only when complete; an object store URL is written in place.
    let local = mtm_dataloader::store::local_path(&args.out).filter(|p| !p.exists());
    let write =
        |progress: &mut dyn FnMut(usize, &mtm_dataloader::synth::SyntheticSession)| match &local {
            Some(path) => {
                mtm_dataloader::synth::write_local_dataset(path, &config, options, progress)
            }
            None => mtm_dataloader::synth::write_dataset(&args.out, &config, options, progress),
        };
    let eids = write(&mut |_, session| {
        trials += session.trials.iter().map(Vec::len).sum::<usize>();
        bar.set_message(session.info.eid.clone());
        bar.inc(1);
    })
    .with_context(|| format!("generating synthetic sessions into {}", args.out))?;
    bar.finish_and_clear();
    println!(
        "wrote {} sessions, {trials} trials to {} in {:.1}s",
        eids.len(),
        args.out,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `mtm data …`.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// List sessions (units, regions, trials per split, mean rate) and validate every file.
    ///
    /// Every row of every file is decoded and checked (CSR structure, shapes, column types);
    /// all problems are listed, each naming the file, row and field. Exits non-zero when
    /// any problem is found.
    Inspect {
        /// Dataset root (folder or object-store URL), or a manifest file of session folders.
        url: String,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the compact side-car of every split file, for datasets made by other tools.
    ///
    /// A side-car (`{eid}_aligned/mtm/{split}-….arrow`, Arrow IPC) holds a file's spikes
    /// and behaviour in the narrowest types, one record batch per Parquet row group; the
    /// loader reads it instead of decoding Parquet's int64 lists, which makes the first
    /// epoch (every read before the row-group cache holds the data) several times faster.
    /// `mtm ingest` and `mtm synth` write side-cars as they write; this command makes them
    /// for a dataset downloaded in the published layout. The Parquet files are not
    /// changed; a side-car that no longer matches its Parquet file is ignored with a
    /// warning. `mtm data inspect` checks each side-car against its Parquet file.
    Sidecar {
        /// Dataset root (folder or object-store URL), or a manifest file of session folders.
        url: String,
    },
}

/// Runs a `mtm data` subcommand.
pub fn run(command: DataCommand) -> Result<ExitCode> {
    match command {
        DataCommand::Inspect { url, json } => inspect_cmd(&url, json),
        DataCommand::Sidecar { url } => sidecar_cmd(&url),
    }
}

fn sidecar_cmd(url: &str) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} writing side-cars [{bar:30}] {pos}/{len} files ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let written = mtm_dataloader::sidecar::write_all(url, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("writing side-cars for {url}"))?;
    bar.finish_and_clear();
    println!(
        "wrote {} side-cars ({:.1} MB, from {:.1} MB of Parquet) in {:.1}s",
        written.files,
        written.sidecar_bytes as f64 / 1e6,
        written.parquet_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect_cmd(url: &str, json: bool) -> Result<ExitCode> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} validating [{bar:30}] {pos}/{len} row groups ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let report = inspect::inspect(url, |p| match p {
        Progress::Planned { groups } => bar.set_length(groups as u64),
        Progress::Group => bar.inc(1),
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let problems = report.problems().count();
    if problems > 0 {
        eprintln!("{problems} problem(s) found:");
        for p in report.problems() {
            eprintln!("  - {p}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(report: &inspect::InspectReport) {
    println!("dataset {}", report.root);
    println!(
        "{:<38} {:>6} {:>6} {:>5} {:>5} {:>9}  regions",
        "eid", "units", "train", "val", "test", "rate(Hz)"
    );
    let mut totals = [0usize; 4];
    for s in &report.sessions {
        let regions: Vec<String> = s.regions.iter().map(|(r, n)| format!("{r}:{n}")).collect();
        println!(
            "{:<38} {:>6} {:>6} {:>5} {:>5} {:>9}  {}",
            s.eid.clone().unwrap_or_else(|| "(unreadable)".into()),
            s.units,
            s.trials[0],
            s.trials[1],
            s.trials[2],
            s.mean_rate_hz.map_or("-".into(), |r| format!("{r:.2}")),
            regions.join(" ")
        );
        for (column, trials) in &s.behaviour_missing {
            println!("  {trials} trial(s) with missing {column} values (left out of its decoding)");
        }
        totals[0] += s.units;
        for i in 0..3 {
            totals[i + 1] += s.trials[i];
        }
    }
    println!(
        "{:<38} {:>6} {:>6} {:>5} {:>5}",
        format!("{} sessions", report.sessions.len()),
        totals[0],
        totals[1],
        totals[2],
        totals[3]
    );
    let (with, files) = report
        .sessions
        .iter()
        .fold((0, 0), |(w, f), s| (w + s.sidecars[0], f + s.sidecars[1]));
    println!(
        "compact side-cars: {with} of {files} split files{}",
        if with < files {
            " (`mtm data sidecar URL` writes the rest; they make the first epoch's reads faster)"
        } else {
            " (each checked against its Parquet file)"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("3..8"), Ok((3, 8)));
        assert_eq!(parse_range("3..=8"), Ok((3, 8)));
        assert_eq!(parse_range("5"), Ok((5, 5)));
        assert!(parse_range("a..8").is_err());
    }
}
