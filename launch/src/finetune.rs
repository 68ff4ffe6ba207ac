//! `mtm finetune` and `mtm export`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::Args;
use mtm_dataloader::Dataset;
use mtm_trainer::config::RunConfig;
use mtm_trainer::data::prepare_data;
use mtm_trainer::eval::EvalOptions;
use mtm_trainer::export;
use mtm_trainer::finetune::{FinetuneReport, LoadReport, Pretrained, SessionLoad};
use mtm_trainer::placement::Placement;
use mtm_trainer::report;
use mtm_trainer::train::Trainer;
use mtm_trainer::weights::WeightType;

use crate::train::{Bar, run_eval};

/// Arguments of `mtm finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Run configuration. `data.root` and `data.sessions` name the held-out sessions (all
    /// sessions of the dataset when empty); `model` must match the pretrained
    /// architecture (dropout may differ); masking, train and eval as in `mtm train`;
    /// `finetune.from` and `finetune.freeze_backbone` as documented there.
    #[arg(long)]
    config: PathBuf,
    /// Override a configuration value (as in `mtm train`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Pretrained checkpoint, run or `mtm export` folder (overrides `finetune.from`).
    /// Without one, every held-out session is trained from scratch: the baseline.
    #[arg(long, conflicts_with = "scratch")]
    checkpoint: Option<PathBuf>,
    /// Train from scratch even when the configuration names a pretrained model.
    #[arg(long)]
    scratch: bool,
}

/// Arguments of `mtm export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint folder, or run folder (its newest checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// New folder for `model.safetensors`, `config.json`, `MODEL_CARD.md` and
    /// `reference.safetensors` (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Weight type: f32 (as trained), f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: WeightType,
}

/// `mtm finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<ExitCode> {
    let config = RunConfig::load(&args.config, &args.overrides)?;
    let source = if args.scratch {
        None
    } else {
        args.checkpoint.clone().or(config.finetune.from.clone())
    };
    let report_path = config.out_dir.join(mtm_trainer::finetune::FINETUNE_REPORT);
    if report_path.exists() {
        bail!(
            "{} already holds a fine-tuning report; choose another out_dir (--set out_dir=...)",
            config.out_dir.display()
        );
    }
    if prepare_data(&config)? {
        eprintln!("generated the synthetic dataset at {}", config.data.root);
    }
    let dataset = Dataset::open(&config.data.root)?;
    let held_out = mtm_trainer::data::wanted_eids(&config, &dataset)?;
    let pretrained = source
        .as_deref()
        .map(Pretrained::open)
        .transpose()
        .context("opening the pretrained model")?;
    if let Some(p) = &pretrained {
        p.check(&config.model, &held_out)?;
    }
    for eid in &held_out {
        let dir = config.out_dir.join(eid);
        if dir.join("checkpoints").exists() {
            bail!(
                "{} already holds a run; choose another out_dir (--set out_dir=...)",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(&config.out_dir)
        .with_context(|| format!("creating {}", config.out_dir.display()))?;
    std::fs::write(config.out_dir.join("config.toml"), config.to_toml())
        .with_context(|| format!("writing {}/config.toml", config.out_dir.display()))?;
    eprintln!(
        "fine-tuning {} held-out session(s) of {} {}, {} masking{}",
        held_out.len(),
        config.data.root,
        match &pretrained {
            Some(p) => format!(
                "from {} ({} pretraining sessions)",
                p.dir.display(),
                p.sessions.len()
            ),
            None => "from scratch".to_string(),
        },
        config.masking.scheme.name(),
        if config.finetune.freeze_backbone {
            ", backbone frozen"
        } else {
            ""
        }
    );
    let mut rows = Vec::new();
    let mut loads: Vec<(String, LoadReport)> = Vec::new();
    for (i, eid) in held_out.iter().enumerate() {
        let mut session_config = config.clone();
        session_config.out_dir = config.out_dir.join(eid);
        session_config.data.sessions = vec![eid.clone()];
        session_config.data.select = None;
        session_config.eval.after_training = false;
        let freeze = config.finetune.freeze_backbone;
        let mut load = None;
        let mut trainer =
            Trainer::with_init(session_config.clone(), None, Placement::single(), |model| {
                let model = match &pretrained {
                    Some(p) => {
                        let (model, report) = p.load_shared(model)?;
                        load = Some(report);
                        model
                    }
                    None => model,
                };
                Ok(if freeze {
                    model.freeze_backbone()
                } else {
                    model
                })
            })
            .with_context(|| format!("setting up session {eid}"))?;
        if let Some(report) = load {
            eprintln!(
                "session {}/{} {eid}: loaded {} tensors, created {} ({}), ignored {} pretraining-session tensors",
                i + 1,
                held_out.len(),
                report.loaded.len(),
                report.created.len(),
                report.created.join(", "),
                report.ignored.len()
            );
            let path = session_config.out_dir.join("load-report.json");
            std::fs::create_dir_all(&session_config.out_dir)?;
            std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
            loads.push((eid.clone(), report));
        } else {
            eprintln!("session {}/{} {eid}: from scratch", i + 1, held_out.len());
        }
        let mut observer = Bar::new(trainer.plan().total_steps, config.train.log_every);
        trainer.run(&mut observer)?;
        observer.bar.finish_and_clear();
        let model = trainer.model().valid();
        let mut options = EvalOptions::from_config(&session_config);
        options.sessions = vec![eid.clone()];
        eprintln!(
            "session {}/{} {eid}: evaluating on the {} split",
            i + 1,
            held_out.len(),
            options.split.name()
        );
        let report = run_eval(&model, &dataset, &options, &mut mtm_cluster::SingleProcess)?;
        rows.extend(report.sessions);
    }
    let report = report::summarize(
        "test",
        config.masking.scheme.name(),
        &config.eval.tasks,
        rows,
    );
    println!(
        "{} on held-out sessions, {} masking: bits per spike (per-unit mean), choice accuracy and whisker R² (chance)",
        match &pretrained {
            Some(p) => format!("fine-tuned from {}", p.dir.display()),
            None => "trained from scratch".to_string(),
        },
        report.masking
    );
    println!("{}", report::table(&report));
    let written = FinetuneReport {
        source: pretrained.as_ref().map(|p| p.dir.display().to_string()),
        freeze_backbone: config.finetune.freeze_backbone,
        loads: loads
            .into_iter()
            .map(|(eid, load)| SessionLoad { eid, load })
            .collect(),
        report,
    };
    std::fs::write(&report_path, serde_json::to_string_pretty(&written)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!("report written to {}", report_path.display());
    Ok(ExitCode::SUCCESS)
}

/// `mtm export`.
pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let summary = export::export(&args.checkpoint, &args.out, args.dtype)?;
    eprintln!(
        "exported {} tensors ({} parameters, {:?}) to {}: model.safetensors, config.json, MODEL_CARD.md, reference.safetensors",
        summary.tensors,
        summary.parameters,
        args.dtype,
        summary.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
