//! The optimizer of every run: AdamW, stepped by [`crate::schedule::OneCycle`].

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};

use crate::config::TrainConfig;
use crate::model::Ndt;

/// The optimizer of every run (its state is saved in checkpoints).
pub type Optim = ModuleOptimizer;

/// AdamW with the run's weight decay and second-moment decay.
pub fn adamw(train: &TrainConfig) -> Optim {
    AdamWConfig::new()
        .with_weight_decay(train.weight_decay as f32)
        .with_beta_2(train.beta2 as f32)
        .init()
}

/// One AdamW step: `shared` at `lr`, `own` (the per-session weights' gradients, split off
/// by [`crate::grads::FlatGrads::to_params`]) at `lr × session_scale`.
///
/// Two steps over disjoint gradient sets, because burn updates only the parameters that
/// have a gradient, and its per-group learning rates (`ModuleLearningRate`) are built only
/// by its own schedulers, which `schedule::OneCycle` is not. Each parameter's AdamW state
/// is its own, so this is the update a per-group learning rate would make.
pub fn step(
    optim: &mut Optim,
    lr: f64,
    session_scale: f64,
    model: Ndt,
    (shared, own): (GradientsParams, GradientsParams),
) -> Ndt {
    let model = optim.step(lr, model, shared);
    if own.is_empty() {
        return model;
    }
    optim.step(lr * session_scale, model, own)
}
