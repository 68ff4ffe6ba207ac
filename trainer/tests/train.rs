//! End-to-end training on generated data: the loss falls, checkpoints reload to identical
//! predictions, and a run stopped and resumed ends bitwise equal to an uninterrupted one.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use mtm_tests::TestRun;
use mtm_trainer::artifact::{Artifact, ArtifactKind};
use mtm_trainer::config::RunConfig;
use mtm_trainer::train::{RunEnd, Silent, Trainer};

/// flex draws dropout and initial weights from one process-wide generator: tests that
/// train take turns.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|p| p.into_inner())
}

fn config(dir: &Path, run: &str, extra: &[&str]) -> RunConfig {
    let config = TestRun::new(dir)
        .sessions(2, 5, (20, 30), (120, 150), (2, 3))
        .with(|c| {
            c.out_dir = dir.join(run);
            c.seed = 3;
            c.model.dropout = 0.1;
            c.model.embed_dropout = 0.1;
            c.train.steps = 6;
            c.train.lr = 3e-3;
            c.train.clip_grad_norm = 1.0;
            c.train.accumulate = 2;
            c.train.checkpoint_every = 3;
            c.train.keep_checkpoints = 0;
        })
        .set(extra)
        .config();
    mtm_trainer::data::prepare_data(&config).unwrap();
    config
}

#[test]
fn a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let straight = config(dir.path(), "straight", &[]);
    Trainer::new(straight.clone(), None)
        .unwrap()
        .run(&mut Silent)
        .unwrap();

    // The same run, stopped one step after its first checkpoint (a crash: step 4 is lost but
    // already logged) and resumed from that checkpoint in a new trainer.
    let interrupted = config(dir.path(), "interrupted", &[]);
    let mut first = Trainer::new(interrupted.clone(), None).unwrap();
    first.run_until(4, &mut Silent).unwrap();
    drop(first);
    let saved = interrupted.out_dir.join("checkpoints/step-00000003");
    let mut resumed = Trainer::new(interrupted.clone(), Some(&saved)).unwrap();
    assert_eq!(resumed.step, 3);
    resumed.run(&mut Silent).unwrap();

    let weights = |run: &RunConfig| {
        let dir = run.out_dir.join("checkpoints/step-00000006");
        let model = Artifact::open(&dir)
            .unwrap()
            .model(&Device::flex())
            .unwrap();
        model.parameter_values()
    };
    let (a, b) = (weights(&straight), weights(&interrupted));
    assert_eq!(a.len(), b.len());
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert!(
        differing == 0,
        "{differing} of {} resumed parameters differ from the uninterrupted run's",
        a.len()
    );
    // Metrics hold every step once, also across the resume.
    let steps: Vec<u64> = std::fs::read_to_string(interrupted.out_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    // A different seed really changes the outcome (the comparison above can fail).
    let other = config(dir.path(), "other", &["seed=4"]);
    Trainer::new(other.clone(), None)
        .unwrap()
        .run(&mut Silent)
        .unwrap();
    assert!(weights(&other) != weights(&straight));
}

#[test]
fn a_checkpoint_reloads_to_identical_predictions() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "run", &[]);
    let mut trainer = Trainer::new(config.clone(), None).unwrap();
    trainer.run(&mut Silent).unwrap();
    let live = trainer.model().valid();
    let device = Device::flex();
    let artifact = Artifact::open(&config.out_dir).unwrap();
    assert_eq!(artifact.kind, ArtifactKind::Run);
    let loaded = artifact.model(&device).unwrap();
    assert!(artifact.dir.ends_with("step-00000006"));
    assert_eq!(artifact.config, config);
    assert_eq!(loaded.sessions(), live.sessions());
    for (session, spec) in live.sessions().iter().enumerate() {
        let values: Vec<f32> = (0..4 * 100 * spec.n_units)
            .map(|i| ((i * 7919) % 5) as f32)
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(values, [4, 100, spec.n_units]), &device);
        for (prompt, causal) in [(None, false), (Some(1), true)] {
            let a = live
                .forward(x.clone(), session, prompt, causal)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let b = loaded
                .forward(x.clone(), session, prompt, causal)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert!(a == b, "session {session}: reloaded predictions differ");
        }
    }
}

#[test]
fn training_lowers_the_validation_loss_on_synthetic_data() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "run",
        &[
            "train.steps=60",
            "train.accumulate=1",
            "train.checkpoint_every=0",
            // From random head biases, as the paper's code starts: the initial loss is far
            // above the mean-rate model's, and 60 steps must bring it down.
            "train.init_rates=false",
        ],
    );
    let mut trainer = Trainer::new(config, None).unwrap();
    let before = trainer.validate().unwrap().expect("validation trials").loss;
    trainer.run(&mut Silent).unwrap();
    let after = trainer.validate().unwrap().expect("validation trials").loss;
    assert!(
        after < before * 0.9,
        "validation loss went from {before} to {after}"
    );
}

#[test]
fn a_run_draws_its_curves_with_each_validation() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "run", &["train.validate_every=3"]);
    let out = config.out_dir.clone();
    let mut trainer = Trainer::new(config, None).unwrap();
    trainer.run(&mut Silent).unwrap();
    let plots = out.join(mtm_trainer::plots::PLOTS_DIR);
    let loss = std::fs::read_to_string(plots.join("loss.svg")).unwrap();
    for text in [
        "validation",
        "mean time course",
        "optimizer step",
        "nats per masked entry",
    ] {
        assert!(loss.contains(text), "loss.svg lacks {text:?}");
    }
    for name in ["loss", "learning_rate", "grad_norm"] {
        let png = std::fs::read(plots.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{name}.png");
    }
    // The reference drawn in the picture is recorded with each validation.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let validated: Vec<&str> = csv.lines().skip(1).filter(|l| !l.ends_with(',')).collect();
    assert_eq!(validated.len(), 2, "{csv}");
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with("val_loss,val_time_course")
    );
}

#[test]
fn non_finite_gradients_stop_the_run_or_skip_the_step_as_configured() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    // A learning rate this large sends the weights to infinity within a few steps.
    let blow_up = [
        "train.steps=12",
        "train.lr=1e30",
        "train.clip_grad_norm=0",
        "train.checkpoint_every=0",
    ];
    let stop_config = config(dir.path(), "stop", &blow_up);
    let mut trainer = Trainer::new(stop_config, None).unwrap();
    let err = trainer.run(&mut Silent).unwrap_err().to_string();
    assert!(err.contains("is not finite"), "{err}");
    assert!(trainer.step < 12, "stopped at step {}", trainer.step);

    let skip_config = config(
        dir.path(),
        "skip",
        &[&blow_up[..], &["distributed.non_finite=skip"]].concat(),
    );
    let mut trainer = Trainer::new(skip_config, None).unwrap();
    trainer.run(&mut Silent).unwrap();
    assert_eq!(trainer.step, 12, "the run goes on to its end");
    assert!(trainer.skipped_steps > 0, "some steps were skipped");
}

#[test]
fn a_run_that_stops_improving_ends_early_with_a_checkpoint() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    // A learning rate far below any parameter's precision: the weights never change, so
    // the validation loss never improves on the first.
    let flat = config(
        dir.path(),
        "flat",
        &[
            "train.lr=1e-30",
            "train.steps=20",
            "train.validate_every=1",
            "train.early_stop_patience=2",
            "train.checkpoint_every=0",
        ],
    );
    let mut trainer = Trainer::new(flat.clone(), None).unwrap();
    let end = trainer.run(&mut Silent).unwrap();
    let RunEnd::Converged {
        step, best_step, ..
    } = end
    else {
        panic!("the run did not converge early: {end:?}");
    };
    assert_eq!((step, best_step), (3, 1));
    assert!(flat.out_dir.join("checkpoints/step-00000003").is_dir());
    // The same run that learns goes on to the end.
    let learning = config(
        dir.path(),
        "learning",
        &[
            "train.steps=6",
            "train.validate_every=1",
            "train.early_stop_patience=3",
        ],
    );
    let end = Trainer::new(learning, None)
        .unwrap()
        .run(&mut Silent)
        .unwrap();
    assert_eq!(end, RunEnd::Finished);
}

/// Each parameter's id and values, in the model's parameter order.
fn parameters(model: &mtm_trainer::model::Ndt) -> Vec<(ParamId, Vec<f32>)> {
    struct Collect(Vec<(ParamId, Vec<f32>)>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().try_to_vec::<f32>().unwrap();
            self.0.push((param.id, values));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

#[test]
fn the_session_learning_rate_scale_moves_only_the_per_session_weights_faster() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    // One step of one batch from the same weights, at scale 1 and 4. AdamW's step is
    // linear in the learning rate (its moments do not depend on it), so the stitcher and
    // head of the batch's session move exactly 4 times as far, every shared weight the
    // same, and the other session's weights not at all. Parameter ids are drawn anew with
    // each model: the runs are compared by parameter order.
    let step = |run: &str, scale: &str| {
        let config = config(
            dir.path(),
            run,
            &[
                "train.steps=1",
                "train.accumulate=1",
                "train.checkpoint_every=0",
                &format!("train.session_lr_scale={scale}"),
            ],
        );
        let mut trainer = Trainer::new(config, None).unwrap();
        let before = parameters(trainer.model());
        trainer.run(&mut Silent).unwrap();
        let own = trainer.model().session_param_ids();
        parameters(trainer.model())
            .into_iter()
            .zip(before)
            .map(|((id, a), (_, b))| {
                let moved: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a - b).collect();
                (own.contains(&id), moved)
            })
            .collect::<Vec<_>>()
    };
    let (one, four) = (step("one", "1"), step("four", "4"));
    assert_eq!(one.len(), four.len());
    let norm = |d: &[f32]| d.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (mut own, mut trained) = (0, 0);
    for (i, ((is_own, d1), (is_own_too, d4))) in one.iter().zip(&four).enumerate() {
        assert_eq!(is_own, is_own_too, "parameter {i}");
        if *is_own {
            own += 1;
            let gap: Vec<f32> = d4.iter().zip(d1).map(|(a, b)| a - 4.0 * b).collect();
            let (gap, scale) = (norm(&gap), norm(d1) * 4.0);
            assert!(
                gap <= 1e-3 * scale,
                "parameter {i}: moved {gap} off 4x of {scale}"
            );
            trained += usize::from(scale > 0.0);
        } else {
            assert_eq!(d1, d4, "parameter {i}: a shared weight moved differently");
        }
    }
    // 2 sessions, each a stitcher and a head with weight and bias; the batch's session's
    // 4 tensors trained, the other's did not move.
    assert_eq!((own, trained), (8, 4));
}

#[test]
fn runs_that_start_together_generate_their_new_dataset_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestRun::new(dir.path())
        .sessions(3, 5, (20, 30), (120, 150), (2, 3))
        .config();
    let root = mtm_dataloader::store::local_path(&config.data.root).unwrap();
    assert!(!root.exists());
    // Four runs at once, as a sweep's cells under --jobs or a Slurm array's tasks start.
    let generated: Vec<bool> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| mtm_trainer::data::prepare_data(&config).unwrap()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(generated.iter().filter(|g| **g).count(), 1, "{generated:?}");
    let dataset = mtm_dataloader::dataset::Dataset::open(&config.data.root).unwrap();
    assert_eq!(dataset.sessions.len(), 3);
    let parent = root.parent().unwrap();
    let left: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock") || n.contains(".partial"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
