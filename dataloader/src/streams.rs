//! Keyed random streams: every random draw of a run is a pure function of the seed and a
//! key naming what it is for and where in the run it happens.
//!
//! This is what makes a resumed run repeat the uninterrupted one bit for bit, and what
//! makes N ranks train like one process accumulating N batches: a batch's masks and
//! dropout depend on its place in the epoch's plan, never on which rank holds it or on how
//! many draws came before. Each stream of a training run is named here, once, with its key;
//! the last key word of each is a tag that keeps streams of different purposes apart even
//! when their other words coincide.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A stream of random numbers that is a pure function of `seed` and `key`.
pub fn stream(seed: u64, key: &[u64]) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Each key word selects a ChaCha stream and word position deterministically; mixing
    // through the generator keeps distinct keys far apart.
    for &k in key {
        let mixed = rng.random::<u64>() ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        rng = ChaCha8Rng::seed_from_u64(mixed);
    }
    rng
}

/// The order of one session's training trials in `epoch`.
pub fn trial_shuffle(seed: u64, epoch: u64, session: usize) -> ChaCha8Rng {
    stream(seed, &[epoch, session as u64, 1])
}

/// The order of all sessions' batches in `epoch`.
pub fn batch_shuffle(seed: u64, epoch: u64) -> ChaCha8Rng {
    stream(seed, &[epoch, u64::MAX, 2])
}

/// The masking scheme and the masks of training batch `index` of `epoch`'s plan (its
/// place before sharding over ranks).
pub fn training_masks(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    stream(seed, &[epoch, index, 0x6d61_736b])
}

/// The seed of the device generator that draws the dropout of training batch `index` of
/// `epoch`'s plan.
pub fn training_dropout(seed: u64, epoch: u64, index: u64) -> u64 {
    stream(seed, &[epoch, index, 0x6472_6f70]).random()
}

/// The masking scheme and the masks of validation batch `index` (of session `session`):
/// the same at every validation of a run, so that validation losses compare.
pub fn validation_masks(seed: u64, session: usize, index: u64) -> ChaCha8Rng {
    stream(seed, &[session as u64, index, 0x76616c])
}

/// The assignment of trials to the folds of a cross-validated decoder.
pub fn decoder_folds(seed: u64) -> ChaCha8Rng {
    stream(seed, &[0x666f6c64])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_streams_differ() {
        let a: u64 = stream(1, &[0, 1]).random();
        let b: u64 = stream(1, &[1, 0]).random();
        let c: u64 = stream(1, &[0, 1]).random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn purposes_do_not_share_a_stream() {
        let draws: Vec<u64> = vec![
            trial_shuffle(3, 0, 0).random(),
            batch_shuffle(3, 0).random(),
            training_masks(3, 0, 0).random(),
            training_dropout(3, 0, 0),
            validation_masks(3, 0, 0).random(),
            decoder_folds(3).random(),
        ];
        for (i, a) in draws.iter().enumerate() {
            for b in &draws[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
