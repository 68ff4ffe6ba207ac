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

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One batch: trials of one session, as row indices within the split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// Index of the session in the dataset.
    pub session: usize,
    /// Row indices within the session's split.
    pub trials: Vec<u32>,
}

/// Where a sampler stands: the next batch it hands out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// The epoch, from 0.
    pub epoch: u64,
    /// Batches of this epoch this rank has already handed out.
    pub position: usize,
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

/// A stream of random numbers that is a pure function of its key.
pub fn stream(seed: u64, key: &[u64]) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Each key word selects a ChaCha stream and word position deterministically; mixing
    // through the generator keeps distinct keys far apart.
    for &k in key {
        let mixed = rand::Rng::random::<u64>(&mut rng) ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        rng = ChaCha8Rng::seed_from_u64(mixed);
    }
    rng
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
            trials.shuffle(&mut stream(self.seed, &[epoch, session as u64, 1]));
            batches.extend(trials.chunks_exact(self.batch_size).map(|c| BatchPlan {
                session,
                trials: c.to_vec(),
            }));
        }
        batches.shuffle(&mut stream(self.seed, &[epoch, u64::MAX, 2]));
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

    #[test]
    fn independent_streams_differ() {
        use rand::Rng;
        let a: u64 = stream(1, &[0, 1]).random();
        let b: u64 = stream(1, &[1, 0]).random();
        let c: u64 = stream(1, &[0, 1]).random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }
}
