//! What the evaluation compares a model against: the true rates of synthetic data (the
//! ceiling) and the smoothing + Poisson GLM baseline, scored on the model's own entries.

use std::path::Path;

use burn::module::Module;
use mtm_tests::TestRun;
use mtm_trainer::config::{RunConfig, Task};
use mtm_trainer::eval::{self, EvalOptions};
use mtm_trainer::report::{self, TaskScore};
use mtm_trainer::train::{self, Trainer};

/// flex draws dropout and initial weights from one process-wide generator: tests that
/// build models take turns.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|p| p.into_inner())
}

fn config(dir: &Path, extra: &[&str]) -> RunConfig {
    let config = TestRun::new(dir)
        .sessions(1, 2, (50, 50), (300, 300), (3, 3))
        .model(32, 1)
        .with(|c| {
            c.seed = 1;
            c.data.batch_size = 16;
            c.train.steps = 1;
            c.train.lr = 1e-4;
            c.train.log_every = 10;
            c.eval.rows_per_pass = 256;
        })
        .set(extra)
        .config();
    mtm_trainer::data::prepare_data(&config).unwrap();
    config
}

#[test]
fn true_rates_score_the_ceiling_above_the_baseline_on_every_activity_task() {
    true_rates_score_the_ceiling(&[]);
}

#[test]
fn under_shared_dynamics_true_rates_score_the_ceiling_too() {
    true_rates_score_the_ceiling(&["data.synthesize.dynamics=shared"]);
}

fn true_rates_score_the_ceiling(generator: &[&str]) {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), generator);
    let trainer = Trainer::new(config.clone(), None).unwrap();
    let dataset = trainer.dataset().clone();

    // The generator record regenerates rates that match the files' counts, trial by trial.
    let record = dataset
        .generator()
        .expect("synthetic data records its generator");
    let eid = &dataset.sessions[0].eid;
    let truth = record.true_log_rates(eid).unwrap();
    let n = dataset.sessions[0].trials(mtm_dataloader::session::Split::Test);
    let all: Vec<u32> = (0..n as u32).collect();
    let test = dataset
        .read_batch(0, mtm_dataloader::session::Split::Test, &all)
        .unwrap();
    let rates = &truth[mtm_dataloader::session::Split::Test as usize];
    assert_eq!(rates.len(), test.spikes.len());
    // Poisson log-likelihood of the counts under the regenerated rates, against the same
    // rates given to the wrong trials (shifted by one): the right alignment fits better.
    let trial = test.n_bins * test.n_units;
    let loglik = |shift: usize| -> f64 {
        test.spikes
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let r = f64::from(rates[(i + shift * trial) % rates.len()]);
                f64::from(y) * r - r.exp()
            })
            .sum()
    };
    assert!(
        loglik(0) > loglik(1) + 50.0,
        "{} vs {}",
        loglik(0),
        loglik(1)
    );

    let mut options = EvalOptions::from_config(&config);
    options.tasks = vec![Task::CoSmooth, Task::Forward, Task::Intra, Task::Inter];
    let model = trainer.model().valid();
    let report = eval::evaluate(&model, &dataset, &options, &mut |_, _| {}).unwrap();
    for result in &report.sessions[0].tasks {
        let (Some(ceiling), Some(baseline)) = (result.score.ceiling(), result.score.baseline())
        else {
            panic!(
                "{:?}: no ceiling or baseline in {:?}",
                result.task, result.score
            );
        };
        let TaskScore::Activity(_) = &result.score else {
            unreachable!()
        };
        assert!(
            ceiling > 0.05,
            "{:?}: true rates score only {ceiling} bits per spike",
            result.task
        );
        assert!(
            ceiling > baseline,
            "{:?}: the baseline ({baseline}) beats the true rates ({ceiling})",
            result.task
        );
    }
    // The smoothed units carry information about the held-out one: the baseline beats the
    // mean-rate null on co-smoothing.
    let co = report.sessions[0].tasks[0].score.baseline().unwrap();
    assert!(co > 0.02, "co-smoothing baseline {co}");
    let table = report::table(&report);
    assert!(table.contains("smoothing + GLM baseline"), "{table}");
    assert!(table.contains("true rates (ceiling)"), "{table}");
}

/// A regression test for learning itself: on a small dataset whose units share a
/// trial-to-trial state, a small model trained for a test-sized budget must predict
/// held-out units better than the smoothing + GLM baseline, and its validation loss must
/// fall below each unit's mean time course (a model that ignores the other units cannot).
#[test]
fn a_small_model_beats_the_smoothing_baseline_on_co_smoothing() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &[
            "data.synthesize.seed=3",
            "data.synthesize.units=[40, 40]",
            "data.synthesize.trials=[600, 600]",
            "data.synthesize.regions=[2, 2]",
            "data.synthesize.trial_state=1.0",
            "model.positions=rotary",
            "model.dropout=0.1",
            "model.embed_dropout=0.1",
            "masking.scheme=neuron",
            "masking.ratio=0.2",
            "train.steps=1500",
            "train.lr=3e-3",
            "train.init_rates=true",
        ],
    );
    let mut trainer = Trainer::new(config.clone(), None).unwrap();
    trainer.run(&mut train::Silent).unwrap();
    let validation = trainer.validate().unwrap().expect("validation trials");
    assert!(
        validation.loss < validation.time_course - 0.01,
        "validation loss {} is not below the mean time course's {}",
        validation.loss,
        validation.time_course
    );
    let mut options = EvalOptions::from_config(&config);
    options.tasks = vec![Task::CoSmooth];
    let model = trainer.model().valid();
    let report = eval::evaluate(&model, trainer.dataset(), &options, &mut |_, _| {}).unwrap();
    let score = &report.sessions[0].tasks[0].score;
    let (model_bps, baseline) = (score.headline().unwrap(), score.baseline().unwrap());
    assert!(
        model_bps > baseline,
        "co-smoothing: model {model_bps} bits per spike, smoothing + GLM baseline {baseline}"
    );
}
