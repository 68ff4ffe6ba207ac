//! BrainWideBench's suite TS2 from the command line: `mtm eval --protocol bwb` (scores) and
//! `mtm export-predictions --bwb DIR` (a submission). The session files are read by
//! `mtm_ingest::bwb::ts2` (feature `bwb`), the protocol is `mtm_trainer::ts2`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

/// Arguments of `mtm export-predictions`.
#[derive(Args, Debug)]
pub struct ExportPredictionsArgs {
    /// Write a BrainWideBench TS2 submission under this folder:
    /// `{label}/ts2-{co_smoothing,forecasting}/{recording_id}/seed_{seed}.safetensors`,
    /// as `ibl_bwb_eval`'s PredictionsWriter lays it out, for
    /// `python -m ibl_bwb_eval.scoring.ts2 --pred_dir DIR/LABEL --gt_dir ...`.
    #[arg(long, value_name = "DIR")]
    bwb: PathBuf,
    /// A checkpoint, run or export folder that knows BWB's evaluation sessions (trained
    /// on them), or an `mtm finetune` output folder (each session's fine-tuned model).
    /// Repeat it for each training seed: each model's files go under its run's `seed`
    /// (BWB asks for seeds 43-47, at least three in a row).
    #[arg(long = "checkpoint", required = true, value_name = "PATH")]
    checkpoints: Vec<PathBuf>,
    /// BWB's evaluation session files: an `{eid}.h5`, a folder of them, or the bucket root
    /// (`s3://brain-wide-bench`, with MTM_S3_ANONYMOUS=brain-wide-bench), whose
    /// `selected_units/ibl_brain_wide_bench_2026/eval/` is read.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The submission's label: its folder under --bwb and its `label` metadata.
    #[arg(long)]
    label: String,
    /// Sessions by eid, comma-separated (default: every file a checkpoint knows).
    #[arg(long, value_delimiter = ',')]
    sessions: Vec<String>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 256)]
    windows_per_pass: usize,
}

/// `mtm eval --protocol bwb`: what it was asked.
// Without the `bwb` feature the request is refused unread.
#[cfg_attr(not(feature = "bwb"), allow(dead_code))]
pub struct EvalRequest<'a> {
    /// The model.
    pub checkpoint: &'a Path,
    /// BWB's evaluation files.
    pub from: Option<&'a str>,
    /// Sessions to score (empty: all the model knows).
    pub sessions: &'a [String],
    /// Windows per forward pass.
    pub windows_per_pass: Option<usize>,
    /// Where the JSON report goes.
    pub out: Option<&'a Path>,
}

#[cfg(not(feature = "bwb"))]
const NOT_BUILT: &str = "BrainWideBench files need the `bwb` feature: build with \
    `cargo build --release --features bwb` (it links libhdf5: apt-get install libhdf5-dev pkg-config)";

/// `mtm export-predictions`.
pub fn export_predictions(args: ExportPredictionsArgs) -> Result<ExitCode> {
    #[cfg(feature = "bwb")]
    return built::export_predictions(args);
    #[cfg(not(feature = "bwb"))]
    {
        let _ = args;
        anyhow::bail!(NOT_BUILT)
    }
}

/// `mtm eval --protocol bwb`.
pub fn evaluate(request: EvalRequest<'_>) -> Result<ExitCode> {
    #[cfg(feature = "bwb")]
    return built::evaluate(request);
    #[cfg(not(feature = "bwb"))]
    {
        let _ = request;
        anyhow::bail!(NOT_BUILT)
    }
}

#[cfg(feature = "bwb")]
mod built {
    use std::collections::BTreeMap;

    use anyhow::{Context, bail};
    use burn::prelude::Device;
    use indicatif::{ProgressBar, ProgressStyle};
    use mtm_dataloader::Location;
    use mtm_ingest::bwb::{self, Build, Part};
    use mtm_trainer::artifact::Artifact;
    use mtm_trainer::model::Ndt;
    use mtm_trainer::ts2::{
        self, Recording, TaskPredictions, Ts2Options, Ts2Report, Ts2Session, Ts2Task,
    };

    use super::*;

    /// One model: where it came from, its seed, and how to run it.
    struct Model {
        path: PathBuf,
        seed: u64,
        ndt: Ndt,
        options: Ts2Options,
    }

    /// A `--checkpoint` as models: the path itself, or, for an `mtm finetune` output folder
    /// (it holds finetune-report.json), each session's run in it.
    fn open_all(path: &Path, windows_per_pass: usize, device: &Device) -> Result<Vec<Model>> {
        if !path.join(mtm_trainer::finetune::FINETUNE_REPORT).exists() {
            return Ok(vec![open(path, windows_per_pass, device)?]);
        }
        let mut runs: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("checkpoints").is_dir())
            .collect();
        runs.sort();
        if runs.is_empty() {
            bail!(
                "{} holds finetune-report.json but no session run (a folder with checkpoints/)",
                path.display()
            );
        }
        runs.iter()
            .map(|run| open(run, windows_per_pass, device))
            .collect()
    }

    fn open(path: &Path, windows_per_pass: usize, device: &Device) -> Result<Model> {
        let artifact = Artifact::open(path)?;
        let ndt = artifact.model(device)?;
        Ok(Model {
            path: path.to_path_buf(),
            seed: artifact.config.seed,
            ndt,
            options: Ts2Options {
                masking: artifact.config.masking.scheme,
                windows_per_pass,
            },
        })
    }

    /// The evaluation files under `from`, limited to `sessions` when given (each named
    /// session must be there).
    fn files(from: &str, sessions: &[String]) -> Result<Vec<(String, Location)>> {
        let listed: Vec<(String, Location)> = bwb::list(from, Part::Eval, Build::Selected)?
            .into_iter()
            .map(|l| (l.name().trim_end_matches(".h5").to_string(), l))
            .collect();
        if sessions.is_empty() {
            return Ok(listed);
        }
        let missing: Vec<&String> = sessions
            .iter()
            .filter(|e| !listed.iter().any(|(eid, _)| eid == *e))
            .collect();
        if !missing.is_empty() {
            bail!(
                "no file {{eid}}.h5 under {from} for {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(listed
            .into_iter()
            .filter(|(eid, _)| sessions.contains(eid))
            .collect())
    }

    fn read(location: &Location) -> Result<Recording> {
        let f = bwb::ts2::read_location(location)?;
        Ok(Recording {
            eid: f.eid,
            unit_ids: f.unit_ids,
            held_out: f.held_out_test,
            times: f.times,
            units: f.units,
            task_domain: f.task_domain,
            test_domain: f.test_domain,
            unit_filtering: f.unit_filtering,
            dataset_version: f.dataset_version,
        })
    }

    fn bar(total: u64) -> ProgressBar {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} windows ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
    }

    /// Both tasks of `recording` with `model`.
    fn run(model: &Model, recording: &Recording) -> Result<Vec<TaskPredictions>> {
        let session = model
            .ndt
            .session_index(&recording.eid)
            .expect("only sessions the model knows are run");
        let total = ts2::windows(&recording.intervals()).starts.len();
        if total == 0 {
            bail!(
                "session {}: no test window (no task-aligned interval of 1 s or more lies in \
                 /ts2_test_domain)",
                recording.eid
            );
        }
        let mut out = Vec::new();
        for task in Ts2Task::ALL {
            let bar = bar(total as u64);
            bar.set_prefix(format!(
                "{} {}",
                &recording.eid[..8.min(recording.eid.len())],
                task.id()
            ));
            let p = ts2::predict(
                &model.ndt,
                session,
                recording,
                task,
                &model.options,
                &mut |done, _| bar.set_position(done as u64),
            )
            .with_context(|| format!("{}", model.path.display()))?;
            bar.finish_and_clear();
            out.push(p);
        }
        Ok(out)
    }

    fn print_scores(eid: &str, seed: u64, predictions: &[TaskPredictions]) {
        for p in predictions {
            eprintln!(
                "  {eid}  {:<17} seed {seed:<3} D² {:>8.4}  bps {:>8.4}  ({} windows, {} units)",
                p.task.id(),
                p.scores.poisson_d2,
                p.scores.bps,
                p.shape[0],
                p.shape[2]
            );
        }
    }

    pub(super) fn evaluate(request: EvalRequest<'_>) -> Result<ExitCode> {
        let Some(from) = request.from else {
            bail!(
                "--protocol bwb reads BWB's evaluation files: give --data (an {{eid}}.h5, a \
                 folder of them, or the bucket root)"
            );
        };
        let device = Device::flex();
        let models = open_all(
            request.checkpoint,
            request.windows_per_pass.unwrap_or(256),
            &device,
        )?;
        let seeds: std::collections::BTreeSet<u64> = models.iter().map(|m| m.seed).collect();
        if seeds.len() > 1 {
            bail!(
                "{} holds models of seeds {seeds:?}: evaluate one seed at a time",
                request.checkpoint.display()
            );
        }
        let seed = models[0].seed;
        // Each file with the first model that knows its session.
        let files: Vec<(Location, &Model)> = files(from, request.sessions)?
            .into_iter()
            .filter_map(|(eid, l)| {
                models
                    .iter()
                    .find(|m| m.ndt.session_index(&eid).is_some())
                    .map(|m| (l, m))
            })
            .collect();
        if files.is_empty() {
            bail!(
                "{} knows none of the evaluation sessions under {from}: fine-tune it on them first \
                 (configs/bwb-finetune.toml)",
                request.checkpoint.display()
            );
        }
        eprintln!(
            "TS2 (ibl_bwb_eval {}) on {} session(s) with {} (seed {seed})",
            ts2::CONTRACT_VERSION,
            files.len(),
            request.checkpoint.display(),
        );
        let mut sessions = Vec::new();
        for (location, model) in &files {
            let recording = read(location)?;
            let predictions = run(model, &recording)?;
            print_scores(&recording.eid, seed, &predictions);
            sessions.push(Ts2Session::new(&recording, &predictions));
        }
        let report = Ts2Report::new(request.checkpoint.display().to_string(), seed, sessions);
        for m in &report.mean {
            eprintln!(
                "mean {:<17} D² {:.4}  bps {:.4}",
                m.task.id(),
                m.poisson_d2,
                m.bps
            );
        }
        let out = request.out.map(Path::to_path_buf).unwrap_or_else(|| {
            let dir = if request.checkpoint.is_dir() {
                request.checkpoint.to_path_buf()
            } else {
                PathBuf::from(".")
            };
            dir.join("eval-bwb-ts2.json")
        });
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
        Ok(ExitCode::SUCCESS)
    }

    pub(super) fn export_predictions(args: ExportPredictionsArgs) -> Result<ExitCode> {
        if args.label.is_empty() || args.label.contains(['/', '\\']) || args.label.starts_with('.')
        {
            bail!(
                "--label {:?} must be a folder name (no slashes, not starting with a dot)",
                args.label
            );
        }
        let device = Device::flex();
        let mut models = Vec::new();
        for path in &args.checkpoints {
            models.extend(open_all(path, args.windows_per_pass, &device)?);
        }
        let files = files(&args.from, &args.sessions)?;
        // Each (session, seed) is one file: two models of the same seed for one session
        // would overwrite each other.
        let mut plan: Vec<(String, Location, Vec<usize>)> = Vec::new();
        for (eid, location) in files {
            let knowing: Vec<usize> = (0..models.len())
                .filter(|&m| models[m].ndt.session_index(&eid).is_some())
                .collect();
            let mut seeds = BTreeMap::new();
            for &m in &knowing {
                if let Some(other) = seeds.insert(models[m].seed, m) {
                    bail!(
                        "{} and {} both know session {eid} and were trained with seed {}: one \
                         submission file each would be the same file",
                        models[other].path.display(),
                        models[m].path.display(),
                        models[m].seed
                    );
                }
            }
            if knowing.is_empty() {
                if !args.sessions.is_empty() {
                    bail!("no --checkpoint knows session {eid}");
                }
                eprintln!("skipping {eid}: no --checkpoint knows it");
                continue;
            }
            plan.push((eid, location, knowing));
        }
        if plan.is_empty() {
            bail!(
                "the checkpoints know none of the evaluation sessions under {}: fine-tune on them \
                 first (configs/bwb-finetune.toml)",
                args.from
            );
        }
        let seeds: std::collections::BTreeSet<u64> = models.iter().map(|m| m.seed).collect();
        if seeds.iter().any(|s| !ts2::SEEDS.contains(s)) || seeds.len() < 3 {
            eprintln!(
                "note: BWB ranks submissions over training seeds 43-47 (at least three in a \
                 row); these models have seed(s) {seeds:?}"
            );
        }
        eprintln!(
            "writing TS2 predictions for {} session(s) under {}",
            plan.len(),
            args.bwb.join(&args.label).display()
        );
        let mut written = 0;
        for (_, location, knowing) in &plan {
            let recording = read(location)?;
            for &m in knowing {
                let predictions = run(&models[m], &recording)?;
                for p in &predictions {
                    ts2::write_submission(&args.bwb, &args.label, models[m].seed, &recording, p)?;
                    written += 1;
                }
                print_scores(&recording.eid, models[m].seed, &predictions);
            }
        }
        eprintln!(
            "{written} files written under {}; score them with `python -m \
             ibl_bwb_eval.scoring.ts2 --pred_dir {} --gt_dir GROUND_TRUTH`",
            args.bwb.join(&args.label).display(),
            args.bwb.join(&args.label).display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
