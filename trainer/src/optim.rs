//! The optimizer of every run: AdamW, stepped by [`crate::schedule::OneCycle`].

use burn::optim::{AdamWConfig, ModuleOptimizer};

use crate::config::TrainConfig;

/// The optimizer of every run (its state is saved in checkpoints).
pub type Optim = ModuleOptimizer;

/// AdamW with the run's weight decay and second-moment decay.
pub fn adamw(train: &TrainConfig) -> Optim {
    AdamWConfig::new()
        .with_weight_decay(train.weight_decay as f32)
        .with_beta_2(train.beta2 as f32)
        .init()
}
