//! Which trials go into which batch on which rank, epoch by epoch.
//!
//! The plan of an epoch is a pure function of (seed, epoch): each session's trials are
//! shuffled and cut into batches of B trials of that session, and the batches of all
//! sessions are shuffled together. Rank r of R takes batches r, r + R, r + 2R, …
//!
//! Remainder policy, so that every rank runs exactly the same number of steps and no
//! trial appears twice in an epoch:
//! - the last `n mod B` trials of each session's shuffled order sit the epoch out (a
//!   different few every epoch, since the shuffle changes);
//! - the last `batches mod R` batches of the shuffled epoch are dropped likewise.
//!
//! The sampler's state is (epoch, position within this rank's epoch): saving and
//! restoring it continues with exactly the batch that would have come next.

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::streams;

/// One batch: trials of one session, as row indices within the split, and the batch's
/// place in its epoch's plan, which keys its random streams (see [`crate::streams`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// Index of the session in the dataset.
    pub session: usize,
    /// Row indices within the session's split.
    pub trials: Vec<u32>,
    /// The epoch of the plan (0 for a fixed plan such as validation's).
    pub epoch: u64,
    /// The batch's index in the plan of every rank together, before sharding: the same
    /// whichever rank of however many trains it.
    pub index: u64,
}

/// Where a sampler stands: the next batch it hands out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// The epoch, from 0.
    pub epoch: u64,
    /// Batches of this epoch this rank has already handed out.
    pub position: usize,
}

/// A state carried from one world size to another (see [`SamplerState::reshard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resharded {
    /// Where each rank of the new world continues.
    pub state: SamplerState,
    /// Batches of the epoch that are trained a second time, because the batches the old
    /// world consumed do not divide among the new ranks.
    pub repeated: usize,
}

impl SamplerState {
    /// The state of a rank in a world of `to_world` ranks continuing a run saved by
    /// `from_world` ranks at `self`: the batches of the epoch every old rank together
    /// consumed, shared out anew (rounded down, so that none is skipped).
    pub fn reshard(self, from_world: usize, to_world: usize) -> Resharded {
        let consumed = self.position * from_world;
        Resharded {
            state: SamplerState {
                epoch: self.epoch,
                position: consumed / to_world,
            },
            repeated: consumed % to_world,
        }
    }
}

/// Shuffles and shards batches over ranks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sampler {
    trial_counts: Vec<usize>,
    batch_size: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
}

impl Sampler {
    /// A sampler over sessions with `trial_counts[s]` trials each.
    pub fn new(
        trial_counts: Vec<usize>,
        batch_size: usize,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        if world_size == 0 || rank >= world_size {
            return Err(DataError::Config(format!(
                "rank {rank} is not in a world of {world_size}"
            )));
        }
        let sampler = Self {
            trial_counts,
            batch_size,
            seed,
            rank,
            world_size,
        };
        if sampler.steps_per_epoch() == 0 {
            return Err(DataError::Config(format!(
                "{} full batches of {batch_size} trials per epoch cannot give each of {world_size} ranks a step; lower the batch size or the number of ranks",
                sampler.global_batches()
            )));
        }
        Ok(sampler)
    }

    fn global_batches(&self) -> usize {
        self.trial_counts.iter().map(|n| n / self.batch_size).sum()
    }

    /// Steps every rank takes in every epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.global_batches() / self.world_size
    }

    /// Trials per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Every rank's batches of `epoch`, before sharding and remainder dropping.
    pub fn epoch_plan(&self, epoch: u64) -> Vec<BatchPlan> {
        let mut batches = Vec::with_capacity(self.global_batches());
        for (session, &n) in self.trial_counts.iter().enumerate() {
            let mut trials: Vec<u32> = (0..n as u32).collect();
            trials.shuffle(&mut streams::trial_shuffle(self.seed, epoch, session));
            batches.extend(trials.chunks_exact(self.batch_size).map(|c| BatchPlan {
                session,
                trials: c.to_vec(),
                epoch,
                index: 0,
            }));
        }
        batches.shuffle(&mut streams::batch_shuffle(self.seed, epoch));
        for (index, batch) in batches.iter_mut().enumerate() {
            batch.index = index as u64;
        }
        batches
    }

    /// This rank's batches of `epoch`, exactly [`Self::steps_per_epoch`] of them.
    pub fn rank_plan(&self, epoch: u64) -> Vec<BatchPlan> {
        let steps = self.steps_per_epoch();
        self.epoch_plan(epoch)
            .into_iter()
            .skip(self.rank)
            .step_by(self.world_size)
            .take(steps)
            .collect()
    }

    /// The batches of `rank` of `world` in a fixed plan that reads every trial once, in
    /// order: each session's trials cut into batches of `batch_size` (the last one of a
    /// session may be smaller), batch `i` to rank `i mod world`, at most `max_batches`
    /// batches in all (`None`: every batch). Validation reads its split this way.
    pub fn sequential_plan(
        trial_counts: &[usize],
        batch_size: usize,
        max_batches: Option<usize>,
        rank: usize,
        world: usize,
    ) -> Vec<BatchPlan> {
        let trials = |n: usize| (0..n as u32).collect::<Vec<u32>>();
        trial_counts
            .iter()
            .enumerate()
            .flat_map(|(session, &n)| {
                trials(n)
                    .chunks(batch_size.max(1))
                    .map(|c| (session, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .take(max_batches.unwrap_or(usize::MAX))
            .enumerate()
            .filter(|(index, _)| index % world.max(1) == rank)
            .map(|(index, (session, trials))| BatchPlan {
                session,
                trials,
                epoch: 0,
                index: index as u64,
            })
            .collect()
    }

    /// The state after `state`, one batch further.
    pub fn advance(&self, state: SamplerState) -> SamplerState {
        if state.position + 1 >= self.steps_per_epoch() {
            SamplerState {
                epoch: state.epoch + 1,
                position: 0,
            }
        } else {
            SamplerState {
                epoch: state.epoch,
                position: state.position + 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn counts() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(0usize..120, 1..8)
    }

    proptest! {
        #[test]
        fn every_rank_runs_the_same_number_of_steps(
            counts in counts(), b in 1usize..20, world in 1usize..6, seed: u64, epoch in 0u64..5
        ) {
            let Ok(s0) = Sampler::new(counts.clone(), b, seed, 0, world) else { return Ok(()) };
            for rank in 0..world {
                let s = Sampler::new(counts.clone(), b, seed, rank, world).unwrap();
                prop_assert_eq!(s.rank_plan(epoch).len(), s0.steps_per_epoch());
            }
        }

        #[test]
        fn ranks_are_disjoint_and_complete_up_to_the_documented_remainder(
            counts in counts(), b in 1usize..20, world in 1usize..6, seed: u64, epoch in 0u64..5
        ) {
            let Ok(s0) = Sampler::new(counts.clone(), b, seed, 0, world) else { return Ok(()) };
            let mut seen = HashSet::new();
            for rank in 0..world {
                let s = Sampler::new(counts.clone(), b, seed, rank, world).unwrap();
                for batch in s.rank_plan(epoch) {
                    prop_assert_eq!(batch.trials.len(), b);
                    for t in batch.trials {
                        prop_assert!((t as usize) < counts[batch.session]);
                        prop_assert!(seen.insert((batch.session, t)), "trial seen twice");
                    }
                }
            }
            let total: usize = counts.iter().sum();
            let global: usize = counts.iter().map(|n| n / b).sum();
            // Dropped: per-session remainders plus the global batch remainder, nothing more.
            let dropped_trials = counts.iter().map(|n| n % b).sum::<usize>() + (global % world) * b;
            prop_assert_eq!(seen.len(), total - dropped_trials);
            prop_assert_eq!(s0.steps_per_epoch() * world, global - global % world);
        }

        #[test]
        fn the_plan_is_a_pure_function_of_seed_and_epoch(
            counts in counts(), b in 1usize..20, seed: u64, epoch in 0u64..5
        ) {
            let Ok(s) = Sampler::new(counts.clone(), b, seed, 0, 1) else { return Ok(()) };
            let again = Sampler::new(counts, b, seed, 0, 1).unwrap();
            prop_assert_eq!(s.epoch_plan(epoch), again.epoch_plan(epoch));
        }

        #[test]
        fn advance_walks_every_step_then_wraps(counts in counts(), b in 1usize..20, world in 1usize..4) {
            let Ok(s) = Sampler::new(counts, b, 7, 0, world) else { return Ok(()) };
            let mut state = SamplerState::default();
            for _ in 0..s.steps_per_epoch() {
                prop_assert_eq!(state.epoch, 0);
                state = s.advance(state);
            }
            prop_assert_eq!(state, SamplerState { epoch: 1, position: 0 });
        }
    }

    #[test]
    fn plans_number_their_batches_before_sharding() {
        let world = 3;
        let all = Sampler::new(vec![100, 80], 8, 3, 0, 1)
            .unwrap()
            .epoch_plan(2);
        for rank in 0..world {
            let s = Sampler::new(vec![100, 80], 8, 3, rank, world).unwrap();
            for (p, batch) in s.rank_plan(2).iter().enumerate() {
                assert_eq!(batch.epoch, 2);
                assert_eq!(batch.index as usize, p * world + rank);
                assert_eq!(batch, &all[batch.index as usize]);
            }
        }
    }

    #[test]
    fn resharding_keeps_every_consumed_batch_consumed() {
        let saved = SamplerState {
            epoch: 4,
            position: 5,
        };
        let same = saved.reshard(2, 2);
        assert_eq!((same.state, same.repeated), (saved, 0));
        // 10 batches consumed by 2 ranks: 3 each for 3 ranks, batch 9 trained again.
        let three = saved.reshard(2, 3);
        assert_eq!(
            three.state,
            SamplerState {
                epoch: 4,
                position: 3
            }
        );
        assert_eq!(three.repeated, 1);
        assert_eq!(saved.reshard(2, 1).state.position, 10);
    }

    #[test]
    fn a_sequential_plan_reads_every_trial_once_across_ranks() {
        let counts = [10, 0, 7];
        let mut seen = Vec::new();
        for rank in 0..2 {
            for batch in Sampler::sequential_plan(&counts, 4, None, rank, 2) {
                assert_eq!(batch.index as usize % 2, rank);
                seen.extend(batch.trials.iter().map(|&t| (batch.session, t)));
            }
        }
        seen.sort();
        let want: Vec<(usize, u32)> = (0..10)
            .map(|t| (0, t))
            .chain((0..7).map(|t| (2, t)))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(Sampler::sequential_plan(&counts, 4, Some(2), 0, 1).len(), 2);
    }

    #[test]
    fn epochs_shuffle_differently() {
        let s = Sampler::new(vec![100, 80], 8, 3, 0, 1).unwrap();
        assert_ne!(s.epoch_plan(0), s.epoch_plan(1));
        let other_seed = Sampler::new(vec![100, 80], 8, 4, 0, 1).unwrap();
        assert_ne!(s.epoch_plan(0), other_seed.epoch_plan(0));
    }

    #[test]
    fn too_few_batches_for_the_world_is_an_error() {
        let err = Sampler::new(vec![10], 8, 0, 0, 4).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot give each of 4 ranks a step"),
            "{err}"
        );
    }
}
