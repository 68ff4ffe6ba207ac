//! `mtm bench …`: throughput measurements whose numbers we report (never timed tests).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use mtm_dataloader::{Dataset, Loader, OpenOptions, PrefetchConfig, Sampler, SamplerState, Split};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Decoded trials per second from a dataset (local or object storage).
    ///
    /// Pass 1 starts with an empty cache, so it includes fetching and decoding Parquet;
    /// later passes decode from the row-group cache. CPU time is the process's own
    /// (user + system, from /proc), so trials per CPU-second is the per-core rate.
    Data {
        /// Dataset root or manifest.
        url: String,
        /// Prefetch worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Storage I/O threads.
        #[arg(long, default_value_t = 1)]
        io_threads: usize,
        /// Trials per batch.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Batches prefetched ahead.
        #[arg(long, default_value_t = 8)]
        depth: usize,
        /// Epochs over the train split.
        #[arg(long, default_value_t = 2)]
        passes: u64,
    },
}

/// Runs a benchmark.
pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Data {
            url,
            threads,
            io_threads,
            batch_size,
            depth,
            passes,
        } => data(&url, threads, io_threads, batch_size, depth, passes),
    }
}

/// Process CPU seconds (user + system), Linux only; `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn data(
    url: &str,
    threads: usize,
    io_threads: usize,
    batch_size: usize,
    depth: usize,
    passes: u64,
) -> Result<ExitCode> {
    let open_start = Instant::now();
    let dataset = Arc::new(
        Dataset::open_with(
            url,
            &OpenOptions {
                io_threads,
                ..OpenOptions::default()
            },
        )
        .with_context(|| format!("opening {url}"))?,
    );
    let units: usize =
        dataset.sessions.iter().map(|s| s.n_units).sum::<usize>() / dataset.sessions.len().max(1);
    println!(
        "opened {} sessions (mean {units} units) in {:.2}s",
        dataset.sessions.len(),
        open_start.elapsed().as_secs_f64()
    );
    let sampler = Sampler::new(dataset.trial_counts(Split::Train), batch_size, 0, 0, 1)?;
    let steps = sampler.steps_per_epoch();
    println!(
        "pass  trials  wall(s)  cpu(s)  trials/s  trials/cpu-s  ({threads} decode thread(s), {io_threads} I/O thread(s), B={batch_size})"
    );
    for pass in 0..passes {
        if pass == 0 {
            dataset.clear_cache();
        }
        let (wall0, cpu0) = (Instant::now(), cpu_seconds());
        let mut loader = Loader::new(
            Arc::clone(&dataset),
            Split::Train,
            sampler.clone(),
            SamplerState {
                epoch: pass,
                position: 0,
            },
            PrefetchConfig { depth, threads },
        )?;
        let mut trials = 0usize;
        let mut checksum = 0.0f64;
        for _ in 0..steps {
            let batch = loader.next_batch()?;
            trials += batch.len();
            checksum += batch.spikes[0] as f64;
            loader.recycle(batch);
        }
        drop(loader);
        let wall = wall0.elapsed().as_secs_f64();
        let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
        println!(
            "{:>4} {:>7} {:>8.3} {:>7} {:>9.0} {:>13}  {}",
            pass + 1,
            trials,
            wall,
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            trials as f64 / wall,
            cpu.map_or("-".into(), |c| format!("{:.0}", trials as f64 / c)),
            if pass == 0 {
                "cold: fetch + Parquet decode + densify"
            } else {
                "warm: densify from cache"
            },
        );
        std::hint::black_box(checksum);
    }
    Ok(ExitCode::SUCCESS)
}
