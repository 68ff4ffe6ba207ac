//! `mtm bench …`: throughput measurements whose numbers we report (never timed tests).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use mtm_dataloader::{
    Dataset, GroupSource, Loader, OpenOptions, PrefetchConfig, Sampler, SamplerState, Split,
};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Decoded trials per second from a dataset (local or object storage).
    ///
    /// Pass 1 starts with an empty cache, so it includes fetching and decoding the files
    /// (the compact side-cars where the dataset has them, else Parquet); later passes decode
    /// from the row-group cache. Where side-cars exist, one more cold pass reads the Parquet
    /// files instead, and the ratio of the two cold rates is printed. CPU time is the
    /// process's own (user + system, from /proc), so trials per CPU-second is the per-core
    /// rate.
    Data(DataArgs),
    /// Training-step time of NDT1 (default: the paper's configuration, B=16, N=668, C=668,
    /// D=512, 5 layers) on the CPU or, with --device, a GPU, with a forward / backward /
    /// all-reduce / optimizer breakdown, trials per second and model FLOPs (with
    /// --peak-tflops, the utilisation); on CUDA the gradient all-reduce is NCCL's with one
    /// rank. With --torch, the same architecture in PyTorch on the same device in the same
    /// run, and the ratio; with --torch-official, also the official MtM code's step, and
    /// that ratio.
    Step(StepArgs),
    /// Evaluation cost of co-smoothing three ways: exact leave-one-out batched (many
    /// held-out units per forward pass), groups of 8 batched, and the official scheme
    /// (groups of 8, one pass over the test split per group: about N/8 passes). Prints
    /// passes, wall time and bits per spike of each.
    Eval {
        /// Checkpoint (or run) folder.
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// Dataset (default: the run's).
        #[arg(long)]
        data: Option<String>,
        /// Trial copies per forward pass for the batched scheme.
        #[arg(long, default_value_t = 512)]
        rows_per_pass: usize,
    },
    /// All-reduce throughput between the ranks of an `mpirun`: the trainer's bucketed
    /// path (copy, non-blocking MPI_Iallreduce polled against the timeout, one bucket at a
    /// time) against one raw blocking MPI_Allreduce of the same bytes. Run it as
    /// `mpirun -np 2 mtm bench allreduce`.
    Allreduce {
        /// Floats per rank (default: the paper model's 12,937,120 gradients).
        #[arg(long, default_value_t = 12_937_120)]
        floats: usize,
        /// Bucket size in MB (the trainer's distributed.bucket_mb).
        #[arg(long, default_value_t = 25.0)]
        bucket_mb: f64,
        /// Timed repetitions of each (after one warm-up).
        #[arg(long, default_value_t = 20)]
        repeats: usize,
    },
}

/// Arguments of `mtm bench data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
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
    /// Read the Parquet files only, even where side-cars exist.
    #[arg(long)]
    parquet: bool,
}

/// Arguments of `mtm bench step`.
#[derive(clap::Args, Debug)]
pub struct StepArgs {
    /// Trials per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Units of the session.
    #[arg(long, default_value_t = 668)]
    units: usize,
    /// Stitcher width C.
    #[arg(long, default_value_t = 668)]
    stitch_dim: usize,
    /// Transformer width D.
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Layers.
    #[arg(long, default_value_t = 5)]
    layers: usize,
    /// Heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// MLP width.
    #[arg(long, default_value_t = 1024)]
    mlp: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// A Python interpreter with torch: also time benches/torch_ndt1_step.py.
    #[arg(long)]
    torch: Option<std::path::PathBuf>,
    /// A checkout of the official MtM code (github.com/colehurwitz/IBL_foundation_model):
    /// also time its NDT1 step, built as its `train_sessions.py` builds it
    /// (benches/torch_official_step.py, with the interpreter of --torch, which needs
    /// numpy, scipy, pyyaml and transformers besides torch).
    #[arg(long, requires = "torch")]
    torch_official: Option<std::path::PathBuf>,
    /// Threads PyTorch may use (mtm's CPU backend uses every core).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
    /// Where to compute: cpu (flex), wgpu, or cuda (binaries built with that feature).
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    device: BenchDevice,
    /// The device's peak in TFLOP/s (e.g. an H100/H200 SXM: 989 bf16 dense, 67 fp32):
    /// prints model FLOPs utilisation against it.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Gradient all-reduce bucket size in MB (the trainer's distributed.bucket_mb).
    #[arg(long, default_value_t = 25.0)]
    bucket_mb: f64,
}

/// Devices `mtm bench step` can time.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchDevice {
    /// burn's flex backend on the CPU.
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal).
    Wgpu,
    /// burn's CUDA backend, GPU 0.
    Cuda,
}

impl BenchDevice {
    fn kind(self) -> mtm_trainer::config::DeviceKind {
        use mtm_trainer::config::DeviceKind;
        match self {
            BenchDevice::Cpu => DeviceKind::Cpu,
            BenchDevice::Wgpu => DeviceKind::Wgpu,
            BenchDevice::Cuda => DeviceKind::Cuda,
        }
    }

    fn torch(self) -> &'static str {
        match self {
            BenchDevice::Cuda => "cuda",
            _ => "cpu",
        }
    }
}

/// Runs a benchmark.
pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Data(args) => data(&args),
        BenchCommand::Step(args) => step(&args),
        BenchCommand::Eval {
            checkpoint,
            data,
            rows_per_pass,
        } => eval(&checkpoint, data, rows_per_pass),
        BenchCommand::Allreduce {
            floats,
            bucket_mb,
            repeats,
        } => allreduce(floats, bucket_mb, repeats),
    }
}

/// `mtm bench allreduce`.
fn allreduce(floats: usize, bucket_mb: f64, repeats: usize) -> Result<ExitCode> {
    let topology = mtm_cluster::Topology::from_env()?;
    if topology.world_size < 2 {
        anyhow::bail!("run under mpirun with at least 2 ranks: mpirun -np 2 mtm bench allreduce");
    }
    let bucket = ((bucket_mb * 1e6 / 4.0) as usize).max(1);
    let t = mtm_cluster::bench_allreduce(&topology, floats, bucket, repeats)?;
    let mb = floats as f64 * 4.0 / 1e6;
    if topology.rank == 0 {
        println!(
            "all-reduce of {mb:.1} MB f32 over {} ranks ({}), median of {repeats}:",
            topology.world_size,
            mtm_cluster::mpi_library_version().unwrap_or_default()
        );
        println!(
            "  bucketed ({} buckets of <= {bucket_mb} MB): {:.1} ms, {:.2} GB/s",
            floats.div_ceil(bucket),
            t.bucketed * 1e3,
            mb / 1e3 / t.bucketed
        );
        println!(
            "  raw MPI_Allreduce:                {:.1} ms, {:.2} GB/s",
            t.raw * 1e3,
            mb / 1e3 / t.raw
        );
        println!("  bucketed / raw time: {:.2}", t.bucketed / t.raw);
    }
    Ok(ExitCode::SUCCESS)
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

fn data(bench: &DataArgs) -> Result<ExitCode> {
    let url = bench.url.as_str();
    let open = |sidecars: bool| -> Result<Arc<Dataset>> {
        Ok(Arc::new(
            Dataset::open_with(
                url,
                &OpenOptions {
                    io_threads: bench.io_threads,
                    sidecars,
                    ..OpenOptions::default()
                },
            )
            .with_context(|| format!("opening {url}"))?,
        ))
    };
    let open_start = Instant::now();
    let dataset = open(!bench.parquet)?;
    let units: usize =
        dataset.sessions.iter().map(|s| s.n_units).sum::<usize>() / dataset.sessions.len().max(1);
    let files = || {
        dataset
            .sessions
            .iter()
            .flat_map(|s| s.splits.iter().flatten())
    };
    let with_sidecar = files().filter(|f| f.sidecar.is_some()).count();
    println!(
        "opened {} sessions (mean {units} units; side-cars for {with_sidecar} of {} split files{}) in {:.2}s",
        dataset.sessions.len(),
        files().count(),
        if bench.parquet {
            ", not used: --parquet"
        } else {
            ""
        },
        open_start.elapsed().as_secs_f64()
    );
    let sampler = Sampler::new(
        dataset.trial_counts(Split::Train),
        bench.batch_size,
        0,
        0,
        1,
    )?;
    println!(
        "pass  trials  wall(s)  cpu(s)  trials/s  trials/cpu-s  ({} decode thread(s), {} I/O thread(s), B={})",
        bench.threads, bench.io_threads, bench.batch_size
    );
    let cold_label = if with_sidecar > 0 && !bench.parquet {
        "cold: fetch + side-car decode + densify"
    } else {
        "cold: fetch + Parquet decode + densify"
    };
    let mut cold = Vec::new();
    for pass in 0..bench.passes {
        let label = if pass == 0 {
            cold_label
        } else {
            "warm: densify from cache"
        };
        let rate = data_pass(&dataset, &sampler, bench, pass, label)?;
        if pass == 0 {
            cold.push(rate);
        }
    }
    // Decoding alone, each row group of the train split once, dropped at once (the memory
    // is reused, as when the cache is full and evicting): the per-core decode rate that a
    // dataset too large for the cache sees every epoch.
    let sources: &[(GroupSource, &str)] = if with_sidecar > 0 && !bench.parquet {
        &[
            (GroupSource::Fastest, "side-car"),
            (GroupSource::Parquet, "Parquet"),
        ]
    } else {
        &[(GroupSource::Parquet, "Parquet")]
    };
    let mut decode = Vec::new();
    for &(source, name) in sources {
        let (trials, wall, cpu) = decode_only(&dataset, source)?;
        println!(
            "   - {trials:>7} {wall:>8.3} {:>7} {:>9.0} {:>13}  decode only ({name}, no cache, no densify)",
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            trials as f64 / wall,
            cpu.map_or("-".into(), |c| format!("{:.0}", trials as f64 / c)),
        );
        decode.push(trials as f64 / wall);
    }
    if let [sidecar, parquet] = decode[..] {
        println!(
            "decode only, side-car / Parquet: {:.2}x trials/s",
            sidecar / parquet
        );
    }
    if with_sidecar > 0 && !bench.parquet {
        drop(dataset);
        let parquet = open(false)?;
        let rate = data_pass(
            &parquet,
            &sampler,
            bench,
            0,
            "cold: fetch + Parquet decode + densify (for comparison)",
        )?;
        cold.push(rate);
        println!(
            "cold side-car / cold Parquet: {:.2}x trials/s, {:.2}x trials/cpu-s",
            cold[0].0 / cold[1].0,
            cold[0].1 / cold[1].1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Decodes every row group of the train split once from `source`, dropping each; returns
/// (trials, wall seconds, CPU seconds).
fn decode_only(dataset: &Dataset, source: GroupSource) -> Result<(usize, f64, Option<f64>)> {
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let mut trials = 0;
    for session in &dataset.sessions {
        for (f, file) in session.files(Split::Train).iter().enumerate() {
            for g in 0..file.row_group_rows.len() {
                let group = dataset.block_on(mtm_dataloader::session::read_group(
                    session,
                    Split::Train,
                    f,
                    g,
                    source,
                ))?;
                trials += group.n_rows;
            }
        }
    }
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    Ok((trials, wall0.elapsed().as_secs_f64(), cpu))
}

/// One epoch over the train split (the cache cleared first on pass 0); prints its row and
/// returns (trials/s, trials/cpu-s).
fn data_pass(
    dataset: &Arc<Dataset>,
    sampler: &Sampler,
    bench: &DataArgs,
    pass: u64,
    label: &str,
) -> Result<(f64, f64)> {
    if pass == 0 {
        dataset.clear_cache();
    }
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let mut loader = Loader::new(
        Arc::clone(dataset),
        Split::Train,
        sampler.clone(),
        SamplerState {
            epoch: pass,
            position: 0,
        },
        PrefetchConfig {
            depth: bench.depth,
            threads: bench.threads,
        },
    )?;
    let mut trials = 0usize;
    let mut checksum = 0.0f64;
    for _ in 0..sampler.steps_per_epoch() {
        let batch = loader.next_batch()?;
        trials += batch.len();
        checksum += batch.spikes[0] as f64;
        loader.recycle(batch);
    }
    drop(loader);
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    println!(
        "{:>4} {:>7} {:>8.3} {:>7} {:>9.0} {:>13}  {label}",
        pass + 1,
        trials,
        wall,
        cpu.map_or("-".into(), |c| format!("{c:.2}")),
        trials as f64 / wall,
        cpu.map_or("-".into(), |c| format!("{:.0}", trials as f64 / c)),
    );
    std::hint::black_box(checksum);
    Ok((
        trials as f64 / wall,
        cpu.map_or(f64::NAN, |c| trials as f64 / c),
    ))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn step(args: &StepArgs) -> Result<ExitCode> {
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::prelude::*;
    use mtm_cluster::ReduceOp;
    use mtm_trainer::grads::{FlatGrads, Residence};
    use mtm_trainer::model::{ModelConfig, SessionSpec, masked_poisson_nll};
    use rand::{Rng, SeedableRng};

    let config = ModelConfig {
        stitch_dim: args.stitch_dim,
        hidden: args.hidden,
        layers: args.layers,
        heads: args.heads,
        mlp: args.mlp,
        ..ModelConfig::default()
    };
    let on_cpu = args.device == BenchDevice::Cpu;
    let device = mtm_trainer::placement::compute_device(args.device.kind(), 0)?.autodiff();
    // GPU work is queued: each phase ends by waiting for it, or its time lands in the next.
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))
    };
    device.seed(0);
    let sessions = [SessionSpec {
        eid: "bench".into(),
        n_units: args.units,
        regions: vec![],
    }];
    let mut model = config.init(&sessions, &device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let residence = if on_cpu {
        Residence::Host
    } else {
        Residence::Device
    };
    let mut grads = FlatGrads::with_residence(&model, residence);
    // NCCL with one rank: the gradient all-reduce a multi-GPU run does, on this GPU alone.
    let mut nccl = match args.device {
        BenchDevice::Cuda => match mtm_cluster::gpu_alone(0, std::time::Duration::from_secs(120)) {
            Ok(comm) => Some(comm),
            Err(e) => {
                println!("NCCL all-reduce not measured: {e}");
                None
            }
        },
        _ => None,
    };
    let bucket = ((args.bucket_mb * 1e6 / 4.0) as usize).max(1);
    let (b, t, n) = (args.batch, config.n_bins, args.units);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let counts: Vec<f32> = (0..b * t * n)
        .map(|_| f32::from(u8::from(rng.random_bool(0.25))))
        .collect();
    let held: Vec<bool> = (0..b * n).map(|_| rng.random_bool(0.3)).collect();
    let scored: Vec<f32> = (0..b * t * n)
        .map(|i| f32::from(u8::from(held[(i / (t * n)) * n + i % n])))
        .collect();
    let input: Vec<f32> = counts
        .iter()
        .zip(&scored)
        .map(|(c, s)| c * (1.0 - s))
        .collect();
    let tensor =
        |v: &Vec<f32>| Tensor::<3>::from_data(TensorData::new(v.clone(), [b, t, n]), &device);
    println!(
        "mtm: {} parameters, B={b}, T={t}, N={n}, C={}, D={}, {} layers, {} heads, MLP {}",
        grads.len(),
        config.stitch_dim,
        config.hidden,
        config.layers,
        config.heads,
        config.mlp
    );
    let (mut total, mut forward, mut backward, mut reduce, mut update) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..args.steps + 2 {
        sync()?;
        let start = Instant::now();
        let out = model.forward(tensor(&input), 0, Some(0), false);
        let loss = masked_poisson_nll(out, tensor(&counts), tensor(&scored), true);
        let value = loss.clone().into_scalar::<f32>();
        let forward_done = Instant::now();
        let step_grads = GradientsParams::from_grads(loss.backward(), &model);
        grads.clear();
        grads.add(&model, &step_grads);
        // The buffer is written lazily: its norm makes the accumulation happen here.
        let norm = grads.norm();
        sync()?;
        let backward_done = Instant::now();
        if let Some(comm) = nccl.as_mut() {
            grads.all_reduce(comm.as_mut(), bucket, ReduceOp::Mean)?;
        }
        let reduce_done = Instant::now();
        model = optim.step(1e-4, model, grads.to_params(&device, &[]).0);
        sync()?;
        let end = Instant::now();
        std::hint::black_box((value, norm));
        if i >= 2 {
            total.push((end - start).as_secs_f64());
            forward.push((forward_done - start).as_secs_f64());
            backward.push((backward_done - forward_done).as_secs_f64());
            reduce.push((reduce_done - backward_done).as_secs_f64());
            update.push((end - reduce_done).as_secs_f64());
        }
    }
    let ours = median(&mut total);
    let what = match args.device {
        BenchDevice::Cpu => "flex, CPU",
        BenchDevice::Wgpu => "wgpu",
        BenchDevice::Cuda => "CUDA",
    };
    println!(
        "mtm (burn 0.22.1 {what}): step {:.4} s median of {} (forward {:.4}, backward + gradient accumulation {:.4}, all-reduce {:.4}, optimizer {:.4})",
        ours,
        args.steps,
        median(&mut forward),
        median(&mut backward),
        median(&mut reduce),
        median(&mut update)
    );
    if nccl.is_some() {
        println!(
            "  all-reduce: NCCL with one rank, {:.1} MB of gradients in place on the GPU, buckets of <= {} MB; gradient bytes through the host: {}",
            grads.len() as f64 * 4e-6,
            args.bucket_mb,
            grads.transfers().to_host + grads.transfers().to_device
        );
    }
    let flops = config.train_flops(b, n);
    println!(
        "  {:.0} trials/s; model FLOPs {:.1} GFLOP per step (3 x forward), {:.2} TFLOP/s achieved",
        b as f64 / ours,
        flops / 1e9,
        flops / ours / 1e12
    );
    if let Some(peak) = args.peak_tflops {
        println!(
            "  model FLOPs utilisation: {:.1} % of {peak} TFLOP/s",
            100.0 * flops / ours / 1e12 / peak
        );
    }
    println!("  mask: 30% of units held out in every trial (neuron masking), loss mean over them");
    if let Some(python) = &args.torch {
        let sizes = [
            ("--batch", b),
            ("--units", n),
            ("--stitch-dim", config.stitch_dim),
            ("--hidden", config.hidden),
            ("--layers", config.layers),
            ("--heads", config.heads),
            ("--mlp", config.mlp),
            ("--bins", t),
        ];
        let mut reference = vec![];
        for (flag, value) in sizes {
            reference.extend([flag.to_string(), value.to_string()]);
        }
        reference.extend([
            "--steps".into(),
            args.steps.to_string(),
            "--threads".into(),
            args.torch_threads.to_string(),
            "--device".into(),
            args.device.torch().into(),
        ]);
        let result = python_bench(python, "torch_ndt1_step.py", &reference)?;
        let theirs = result["step_s_median"].as_f64().unwrap_or(f64::NAN);
        println!(
            "project reference, PyTorch {} (benches/torch_ndt1_step.py, {}, {} threads, {} parameters): step {theirs:.4} s median",
            result["torch"].as_str().unwrap_or("?"),
            args.device.torch(),
            result["threads"],
            result["params"]
        );
        println!("  mask: the same as mtm's");
        let official = match &args.torch_official {
            Some(checkout) => {
                let mut official_args = vec![
                    "--checkout".to_string(),
                    checkout.display().to_string(),
                    "--batch".into(),
                    b.to_string(),
                    "--units".into(),
                    n.to_string(),
                    "--steps".into(),
                    args.steps.to_string(),
                    "--threads".into(),
                    args.torch_threads.to_string(),
                    "--device".into(),
                    args.device.torch().into(),
                ];
                if let Some(commit) = git_commit(checkout) {
                    official_args.extend(["--commit".into(), commit]);
                }
                let result = python_bench(python, "torch_official_step.py", &official_args)?;
                let step = result["step_s_median"].as_f64().unwrap_or(f64::NAN);
                println!(
                    "official MtM ({}, PyTorch {}, {}, {} threads, {} parameters): step {step:.4} s median",
                    result["source"].as_str().unwrap_or("?"),
                    result["torch"].as_str().unwrap_or("?"),
                    args.device.torch(),
                    result["threads"],
                    result["params"]
                );
                if let Some(modes) = result["by_mode"].as_object() {
                    let modes: Vec<String> = modes
                        .iter()
                        .map(|(mode, s)| format!("{mode} {:.3} s", s.as_f64().unwrap_or(f64::NAN)))
                        .collect();
                    println!(
                        "  mask: one of its trainer's four schemes drawn per step; each alone: {}",
                        modes.join(", ")
                    );
                }
                Some(step)
            }
            None => None,
        };
        println!("ratio mtm / project reference: {:.2}", ours / theirs);
        if let Some(official) = official {
            println!("ratio mtm / official MtM:      {:.2}", ours / official);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `benches/NAME` with `python` and reads the one JSON line it prints.
fn python_bench(
    python: &std::path::Path,
    name: &str,
    args: &[String],
) -> Result<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches")
        .join(name);
    let output = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line.trim())
        .with_context(|| format!("reading the output of {}: `{line}`", script.display()))
}

/// The commit a checkout is at, when it is a git work tree.
fn git_commit(dir: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn eval(
    checkpoint: &std::path::Path,
    data: Option<String>,
    rows_per_pass: usize,
) -> Result<ExitCode> {
    use mtm_trainer::config::Task;
    use mtm_trainer::eval::{EvalOptions, evaluate};
    use mtm_trainer::report::TaskScore;

    let device = burn::prelude::Device::flex();
    let artifact = mtm_trainer::artifact::Artifact::open(checkpoint)?;
    let (model, config) = (artifact.model(&device)?, artifact.config);
    let dataset = Dataset::open(&data.unwrap_or_else(|| config.data.root.clone()))?;
    let mut base = EvalOptions::from_config(&config);
    base.tasks = vec![Task::CoSmooth];
    base.rows_per_pass = rows_per_pass;
    println!(
        "scheme                              session   units trials  passes  wall(s)  bps(per-unit mean)"
    );
    let trials = dataset
        .sessions
        .iter()
        .map(|s| s.trials(Split::Test))
        .max()
        .unwrap_or(1)
        .max(1);
    // (name, units held out together, rows per pass): the official code runs one pass over
    // the whole split per group of 8 units.
    let schemes = [
        ("mtm: exact leave-one-out, batched", 1, rows_per_pass),
        ("mtm: groups of 8, batched", 8, rows_per_pass),
        ("official: groups of 8, a pass each", 8, trials),
    ];
    for (name, group, rows) in schemes {
        let mut options = base.clone();
        options.heldout_group = group;
        options.rows_per_pass = rows;
        let report = evaluate(&model, &dataset, &options, &mut |_, _| {})?;
        for s in &report.sessions {
            if let Some(TaskScore::Activity(a)) = s.tasks.first().map(|t| &t.score) {
                println!(
                    "{name:<35} {:<9} {:>5} {:>6} {:>7} {:>8.2}  {}",
                    &s.eid[..8],
                    s.n_units,
                    s.trials,
                    a.forward_passes,
                    a.wall_s,
                    a.bps_per_unit_mean
                        .map_or("-".into(), |v| format!("{v:.4}"))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
