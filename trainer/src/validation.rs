//! Validation during training: the mean masked loss on the validation split, with masks
//! from a stream fixed by the seed (so every validation of a run sees the same masks), and
//! beside it the loss of each unit's mean time course on the same entries (a model below it
//! uses what the other units show). Ranks read disjoint batches of the same fixed plan
//! through the loader and combine their sums, so every rank gets what one process would.

use std::sync::Arc;

use mtm_dataloader::dataset::Dataset;
use mtm_dataloader::loader::{Loader, PrefetchConfig};
use mtm_dataloader::sampler::Sampler;
use mtm_dataloader::session::Split;
use mtm_dataloader::streams;

use crate::config::{LossReduction, RunConfig};
use crate::data::SessionMap;
use crate::error::Result;
use crate::masking::mask_batch;
use crate::model::{Ndt, masked_poisson_nll, tensor3};
use crate::plan::RunPlan;

/// One validation: the model's masked loss and, on the same masked entries, the loss of
/// each unit's mean time course (a model below it uses what the other units show).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// Mean masked loss of the model.
    pub loss: f64,
    /// Mean masked loss of predicting each unit's mean time course.
    pub time_course: f64,
}

/// The best validation loss so far and how many validations in a row have not improved on
/// it: the rule of `train.early_stop_patience`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Convergence {
    /// The lowest validation loss and its step.
    pub best: Option<(f64, u64)>,
    /// Validations since the best.
    pub since_best: u64,
}

impl Convergence {
    /// Records the validation loss of `step`; true once `patience` validations in a row
    /// have not lowered the best.
    pub fn record(&mut self, loss: f64, step: u64, patience: u64) -> bool {
        match self.best {
            Some((best, _)) if loss >= best => self.since_best += 1,
            _ => {
                self.best = Some((loss, step));
                self.since_best = 0;
            }
        }
        patience > 0 && self.since_best >= patience
    }
}

/// Loss sums over the validation batches one rank computed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ValidationSums {
    /// Sum of the model's batch losses.
    pub model: f64,
    /// Sum of the time courses' batch losses.
    pub time_course: f64,
    /// Batches summed.
    pub batches: usize,
}

impl ValidationSums {
    /// The mean losses over the sums of every rank (`None` without validation batches).
    pub fn combine(all: &[ValidationSums]) -> Option<Validation> {
        let batches: usize = all.iter().map(|s| s.batches).sum();
        (batches > 0).then(|| Validation {
            loss: all.iter().map(|s| s.model).sum::<f64>() / batches as f64,
            time_course: all.iter().map(|s| s.time_course).sum::<f64>() / batches as f64,
        })
    }
}

/// The validation batches that fall to `rank` of `world` (batch `i` of the plan goes to
/// rank `i mod world`; see `Sampler::sequential_plan`), with their loss sums. `courses`
/// are the sessions' mean time courses (see [`crate::data::time_courses`]).
pub fn validation_sums(
    model: &Ndt,
    dataset: &Arc<Dataset>,
    map: &SessionMap,
    config: &RunConfig,
    plan: &RunPlan,
    (rank, world): (usize, usize),
    courses: &[Option<Vec<f32>>],
) -> Result<ValidationSums> {
    let device = model.device();
    let mean = config.train.loss == LossReduction::Mean;
    let counts = map.trial_counts(dataset, Split::Val);
    let plans = Sampler::sequential_plan(
        &counts,
        config.data.batch_size,
        plan.validate_batches.map(|n| n.get()),
        rank,
        world,
    );
    let prefetch = PrefetchConfig {
        depth: config.data.prefetch,
        threads: config.data.loader_threads,
    };
    let mut loader = Loader::fixed(Arc::clone(dataset), Split::Val, plans, prefetch)?;
    let mut sums = ValidationSums::default();
    while let Some(next) = loader.next_planned() {
        let (batch_plan, batch) = next?;
        let ds_index = batch_plan.session;
        let session = map.model_index[ds_index].expect("only trained sessions are planned");
        let mut rng = streams::validation_masks(config.seed, ds_index, batch_plan.index);
        let (scheme, prompt) = config.masking.scheme.choose(&config.masking.mix, &mut rng);
        let masked = mask_batch(
            &batch,
            scheme,
            &map.regions[ds_index],
            config.masking.ratios(),
            &mut rng,
        );
        let shape = [batch.len(), batch.n_bins, batch.n_units];
        if let Some(course) = courses[ds_index].as_deref() {
            let per_trial = course.len();
            let (mut sum, mut scored) = (0.0f64, 0usize);
            for (i, (&y, &s)) in batch.spikes.iter().zip(&masked.scored).enumerate() {
                if s > 0.0 {
                    let l = f64::from(course[i % per_trial]);
                    sum += l.exp() - f64::from(y) * l;
                    scored += 1;
                }
            }
            sums.time_course += if mean {
                sum / scored.max(1) as f64
            } else {
                sum
            };
        }
        let out = model.forward(
            tensor3(masked.input, shape, &device),
            session,
            prompt,
            scheme.causal(),
        );
        let loss = masked_poisson_nll(
            out,
            tensor3(batch.spikes.clone(), shape, &device),
            tensor3(masked.scored, shape, &device),
            mean,
        );
        sums.model += f64::from(loss.into_scalar::<f32>());
        sums.batches += 1;
        loader.recycle(batch);
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_waits_for_patience_validations_without_a_new_best() {
        let mut c = Convergence::default();
        let losses = [0.5, 0.4, 0.41, 0.39, 0.395, 0.40];
        let stops: Vec<bool> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| c.record(l, i as u64, 2))
            .collect();
        assert_eq!(stops, [false, false, false, false, false, true]);
        assert_eq!(c.best, Some((0.39, 3)));
        // Patience 0 never stops.
        let mut never = Convergence::default();
        assert!((0..10).all(|i| !never.record(1.0, i, 0)));
    }
}
