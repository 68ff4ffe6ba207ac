//! The resolved plan of a run: what the configuration and the world size decide, computed
//! once before the first step (as ripgrep resolves its low-level arguments into
//! high-level ones), so that the loop never re-derives a cadence or re-checks a zero.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use crate::config::RunConfig;

/// What a run does and when, resolved from its configuration and the sampler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// Batches each rank trains per epoch.
    pub steps_per_epoch: u64,
    /// Batches each rank accumulates per optimizer step.
    pub accumulate: NonZeroUsize,
    /// Ranks in the run.
    pub world: NonZeroUsize,
    /// Trials per optimizer step over every rank.
    pub trials_per_step: usize,
    /// Write a metrics record every this many steps.
    pub log_every: NonZeroU64,
    /// Validate every this many steps (and always after the last).
    pub validate_every: Option<NonZeroU64>,
    /// Validation batches (`None`: the whole split).
    pub validate_batches: Option<NonZeroUsize>,
    /// Stop once this many validations in a row have not improved on the best.
    pub early_stop_patience: Option<NonZeroU64>,
    /// Checkpoint every this many steps (and always after the last).
    pub checkpoint_every: Option<NonZeroU64>,
    /// Log rank 0's step-time breakdown every this many steps.
    pub breakdown_every: Option<NonZeroU64>,
    /// Floats per gradient all-reduce bucket.
    pub bucket_elems: NonZeroUsize,
    /// How long any collective may take.
    pub timeout: Duration,
}

fn every(n: u64) -> Option<NonZeroU64> {
    NonZeroU64::new(n)
}

fn at(cadence: Option<NonZeroU64>, step: u64) -> bool {
    cadence.is_some_and(|n| step % n == 0)
}

impl RunPlan {
    /// The plan of `config` for ranks that each train `steps_per_epoch` batches per epoch
    /// in a world of `world`. The configuration has been validated (`RunConfig::load`).
    pub fn resolve(config: &RunConfig, steps_per_epoch: usize, world: usize) -> Self {
        let train = &config.train;
        let accumulate = NonZeroUsize::new(train.accumulate).unwrap_or(NonZeroUsize::MIN);
        let steps_per_epoch = steps_per_epoch as u64;
        let total_steps = if train.steps > 0 {
            train.steps
        } else {
            (train.epochs * steps_per_epoch).div_ceil(accumulate.get() as u64)
        };
        let world = NonZeroUsize::new(world).unwrap_or(NonZeroUsize::MIN);
        Self {
            total_steps,
            steps_per_epoch,
            accumulate,
            world,
            trials_per_step: world.get() * accumulate.get() * config.data.batch_size,
            log_every: every(train.log_every).unwrap_or(NonZeroU64::MIN),
            validate_every: every(train.validate_every),
            validate_batches: NonZeroUsize::new(train.validate_batches),
            early_stop_patience: every(train.early_stop_patience),
            checkpoint_every: every(train.checkpoint_every),
            breakdown_every: every(config.distributed.breakdown_every),
            bucket_elems: NonZeroUsize::new(config.distributed.bucket_elems())
                .unwrap_or(NonZeroUsize::MIN),
            timeout: config.distributed.timeout(),
        }
    }

    /// Whether step `step` (steps done) is the last.
    pub fn is_last(&self, step: u64) -> bool {
        step == self.total_steps
    }

    /// Whether the run validates after step `step`.
    pub fn validates_at(&self, step: u64) -> bool {
        self.is_last(step) || at(self.validate_every, step)
    }

    /// Whether the run checkpoints after step `step`.
    pub fn checkpoints_at(&self, step: u64) -> bool {
        self.is_last(step) || at(self.checkpoint_every, step)
    }

    /// Whether the run writes a metrics record after step `step` (also after every
    /// validation).
    pub fn logs_at(&self, step: u64) -> bool {
        self.is_last(step) || at(Some(self.log_every), step) || self.validates_at(step)
    }

    /// Whether the run logs the step-time breakdown after step `step`.
    pub fn breakdown_at(&self, step: u64) -> bool {
        at(self.breakdown_every, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(overrides: &[&str]) -> RunConfig {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::parse(
            "out_dir = \"x\"\n[data]\nroot = \"y\"\n",
            "test",
            &overrides,
        )
        .unwrap()
    }

    #[test]
    fn zero_cadences_mean_never_and_the_last_step_always_counts() {
        let plan = RunPlan::resolve(
            &config(&[
                "train.steps=10",
                "train.validate_every=0",
                "train.checkpoint_every=4",
            ]),
            3,
            1,
        );
        assert_eq!(plan.validate_every, None);
        assert!(!plan.validates_at(5) && plan.validates_at(10));
        assert!(plan.checkpoints_at(4) && plan.checkpoints_at(8) && !plan.checkpoints_at(9));
        assert!(plan.checkpoints_at(10));
    }

    #[test]
    fn epochs_decide_the_steps_when_steps_is_zero() {
        let plan = RunPlan::resolve(
            &config(&["train.steps=0", "train.epochs=3", "train.accumulate=2"]),
            5,
            2,
        );
        // 3 epochs of 5 batches per rank, 2 batches per optimizer step.
        assert_eq!(plan.total_steps, 8);
        assert_eq!(plan.trials_per_step, 2 * 2 * plan_batch());
    }

    fn plan_batch() -> usize {
        config(&[]).data.batch_size
    }
}
