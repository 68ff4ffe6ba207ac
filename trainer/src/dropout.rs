//! Dropout with its mask drawn in bulk on the CPU.
//!
//! burn's `Dropout` draws its Bernoulli mask one element at a time from a ChaCha
//! generator and applies it with two multiplications; on the paper's model that was about
//! 9 % of a CPU training step (`perf` over `mtm bench step`). Here the device's generator
//! gives one key per call, so the draws stay a function of the seed the trainer sets for
//! each batch (a resumed run repeats them), and the mask comes from a counter-based hash
//! of (key, element), filled in parallel and applied with one multiplication. On other
//! devices burn's own dropout runs, drawn where the tensor lives.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::Distribution;
use rayon::prelude::*;

/// `layer` applied to `x`: as burn's `Dropout::forward` (the same conditions: training on
/// an autodiff device, not frozen, probability above 0), with the mask from [`mask`] on
/// the CPU.
pub fn forward<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    if device.clone().inner() != Device::flex() {
        return layer.forward(x);
    }
    let shape = x.shape();
    let values = mask(shape.num_elements(), 1.0 - layer.prob, key(&device));
    // The mask in the activations' dtype (bf16 under `train.precision = "bf16"`).
    let dtype = x.dtype();
    x * Tensor::<D>::from_data(TensorData::new(values, shape), &device).cast(dtype)
}

/// 72 bits from the device's generator (three uniform f32 of 24 bits each), folded into 64.
fn key(device: &Device) -> u64 {
    Tensor::<1>::random([3], Distribution::Default, device)
        .into_data()
        .try_into_vec::<f32>()
        .expect("uniform draws are f32")
        .iter()
        .fold(0u64, |key, &u| (key << 24) ^ ((u * 16_777_216.0) as u64))
}

/// Elements per parallel task (even: each hash gives two elements their draws).
const CHUNK: usize = 1 << 16;

/// A dropout mask of `len` elements: `1 / keep` with probability `keep`, else 0. Element
/// `i` depends on `key` and `i` alone, whatever the number of threads.
pub fn mask(len: usize, keep: f64, key: u64) -> Vec<f32> {
    // Keep an element when its 32-bit draw falls below keep * 2^32.
    let threshold = (keep * 4_294_967_296.0).round() as u64;
    let scale = (1.0 / keep) as f32;
    let value = |draw: u64| if draw < threshold { scale } else { 0.0 };
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk_index, chunk)| {
            let first_pair = (chunk_index * CHUNK / 2) as u64;
            for (j, pair) in chunk.chunks_mut(2).enumerate() {
                let h = splitmix64(key, first_pair + j as u64);
                pair[0] = value(h & 0xffff_ffff);
                if let Some(second) = pair.get_mut(1) {
                    *second = value(h >> 32);
                }
            }
        });
    out
}

/// SplitMix64's output function at position `counter` of the stream `key`: a bijective
/// mix with full avalanche, cheap enough for one call per two elements.
fn splitmix64(key: u64, counter: u64) -> u64 {
    let mut z = key.wrapping_add(counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_asked_fraction_scaled() {
        let (len, keep) = (1_000_003, 0.6);
        let m = mask(len, keep, 42);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64;
        let sd = (len as f64 * keep * (1.0 - keep)).sqrt();
        assert!(
            (kept - len as f64 * keep).abs() < 4.0 * sd,
            "kept {kept} of {len}"
        );
        assert!(m.iter().all(|&v| v == 0.0 || v == (1.0 / keep) as f32));
        // Unbiased: the mean of the mask is 1 (within 4 sd of its estimate).
        let mean = m.iter().map(|&v| f64::from(v)).sum::<f64>() / len as f64;
        assert!(
            (mean - 1.0).abs() < 4.0 * sd / len as f64 / keep,
            "mean {mean}"
        );
    }

    #[test]
    fn the_mask_is_a_function_of_key_and_position() {
        let a = mask(200_001, 0.8, 7);
        assert_eq!(a, mask(200_001, 0.8, 7));
        // A shorter mask is a prefix: element i does not depend on the length or the
        // chunking.
        assert_eq!(&a[..70_001], &mask(70_001, 0.8, 7)[..]);
        let b = mask(200_001, 0.8, 8);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64;
        // Two independent masks agree on 0.8^2 + 0.2^2 = 68 % of elements.
        assert!((same / 200_001.0 - 0.68).abs() < 0.01, "agreement {same}");
    }

    #[test]
    fn neighbours_are_uncorrelated() {
        // Both halves of one hash, and consecutive hashes, keep independently.
        let m = mask(400_000, 0.5, 3);
        let kept = |i: usize| f64::from(u8::from(m[i] != 0.0));
        for lag in [1usize, 2, 3] {
            let n = m.len() - lag;
            let both = (0..n).map(|i| kept(i) * kept(i + lag)).sum::<f64>() / n as f64;
            assert!((both - 0.25).abs() < 0.005, "lag {lag}: {both}");
        }
    }
}
