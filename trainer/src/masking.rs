//! The masking schemes of spec §3, drawn per trial in the session's own unit space.
//!
//! A mask says which (bin, unit) entries of a `(T, N)` trial are zeroed in the input and
//! which are scored by the loss. One scheme is drawn per batch ([`Masking::choose`]); masks
//! are drawn per trial from a stream that is a pure function of (seed, epoch, global batch
//! index) (`mtm_dataloader::streams::training_masks`): ranks hold different batches and so
//! draw different masks, a resumed run draws the same ones, and a batch gets the same
//! masks whichever rank of however many processes it (so 2 ranks repeat 1 rank
//! accumulating 2 batches).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One masking scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Each bin with probability `ratio`, all units (the baseline).
    Temporal,
    /// Each unit with probability `ratio`, all bins.
    Neuron,
    /// Each bin with probability `causal_ratio`; attention is causal.
    Causal,
    /// Every unit of one random region.
    InterRegion,
    /// Every unit outside one random region (input only), plus `ratio` of the units inside
    /// it (input and loss).
    IntraRegion,
}

impl Scheme {
    /// Every scheme, the single-scheme trainings' order.
    pub const ALL: [Scheme; 5] = [
        Scheme::Temporal,
        Scheme::Neuron,
        Scheme::Causal,
        Scheme::InterRegion,
        Scheme::IntraRegion,
    ];

    /// The name in configs, reports and exports.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Temporal => "temporal",
            Scheme::Neuron => "neuron",
            Scheme::Causal => "causal",
            Scheme::InterRegion => "inter-region",
            Scheme::IntraRegion => "intra-region",
        }
    }

    /// The schemes MtM mixes, in prompt-token order.
    pub const MTM: [Scheme; 4] = [
        Scheme::Neuron,
        Scheme::Causal,
        Scheme::InterRegion,
        Scheme::IntraRegion,
    ];

    /// Whether the model must attend causally under this scheme.
    pub fn causal(self) -> bool {
        self == Scheme::Causal
    }

    /// Index of this scheme's prompt token (MtM order; temporal has its own last slot).
    pub fn prompt(self) -> usize {
        Self::MTM
            .iter()
            .position(|&s| s == self)
            .unwrap_or(Self::MTM.len())
    }
}

/// What a run masks with: one scheme throughout, or MtM's mixture.
///
/// Written in configs as `temporal`, `neuron`, `causal`, `inter-region`, `intra-region`,
/// `mtm` or `mtm-not-prompted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Masking {
    /// Always the same scheme, without prompt tokens.
    Single(Scheme),
    /// MtM: one of [`Scheme::MTM`] uniformly per batch, with its prompt token.
    Mtm,
    /// The same mixture without prompt tokens.
    MtmNotPrompted,
}

impl Masking {
    /// Every masking: the single schemes, then the two mixtures.
    pub fn all() -> impl Iterator<Item = Masking> {
        Scheme::ALL
            .into_iter()
            .map(Masking::Single)
            .chain([Masking::Mtm, Masking::MtmNotPrompted])
    }

    /// The scheme of one batch, and the prompt token to prepend (if any). The mixtures
    /// draw from [`Scheme::MTM`] with the weights of `mix`.
    pub fn choose(self, mix: &Mix, rng: &mut ChaCha8Rng) -> (Scheme, Option<usize>) {
        match self {
            Masking::Single(scheme) => (scheme, None),
            Masking::Mtm => {
                let scheme = mix.draw(rng);
                (scheme, Some(scheme.prompt()))
            }
            Masking::MtmNotPrompted => (mix.draw(rng), None),
        }
    }

    /// Whether this masking draws from a mixture (and so reads [`Mix`]).
    pub fn mixes(self) -> bool {
        matches!(self, Masking::Mtm | Masking::MtmNotPrompted)
    }

    /// Whether the model was trained with prompt tokens (and is evaluated with them).
    pub fn prompted(self) -> bool {
        self == Masking::Mtm
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Masking::Single(scheme) => scheme.name(),
            Masking::Mtm => "mtm",
            Masking::MtmNotPrompted => "mtm-not-prompted",
        }
    }
}

impl std::str::FromStr for Masking {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Masking::all().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Masking::all().map(Masking::name).collect();
            format!(
                "unknown masking `{s}`; expected one of {}",
                names.join(", ")
            )
        })
    }
}

impl TryFrom<String> for Masking {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Masking> for String {
    fn from(m: Masking) -> String {
        m.name().to_string()
    }
}

/// How often MtM's mixture draws each of its schemes: relative weights, one per scheme
/// of [`Scheme::MTM`]. The paper draws them uniformly (all 1, the default).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Mix {
    /// Weight of neuron masking (trains co-smoothing).
    pub neuron: f64,
    /// Weight of causal masking (trains forward prediction).
    pub causal: f64,
    /// Weight of inter-region masking.
    pub inter_region: f64,
    /// Weight of intra-region masking.
    pub intra_region: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            neuron: 1.0,
            causal: 1.0,
            inter_region: 1.0,
            intra_region: 1.0,
        }
    }
}

impl Mix {
    /// The weights in [`Scheme::MTM`] order.
    pub fn weights(&self) -> [f64; 4] {
        [
            self.neuron,
            self.causal,
            self.inter_region,
            self.intra_region,
        ]
    }

    /// Each scheme's probability of being drawn, in [`Scheme::MTM`] order.
    pub fn probabilities(&self) -> [f64; 4] {
        let w = self.weights();
        let total: f64 = w.iter().sum();
        w.map(|x| x / total)
    }

    /// Every problem with the weights (finite, non-negative, not all zero), as messages
    /// naming the field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (scheme, w) in Scheme::MTM.iter().zip(self.weights()) {
            if !(w.is_finite() && w >= 0.0) {
                out.push(format!(
                    "masking.mix.{} must be a finite weight >= 0, not {w}",
                    scheme.name()
                ));
            }
        }
        if out.is_empty() && self.weights().iter().sum::<f64>() <= 0.0 {
            out.push("masking.mix: at least one weight must be above 0".into());
        }
        out
    }

    /// Draws one scheme. Equal weights take the paper's uniform draw (one integer from the
    /// stream, so runs with the default mix repeat earlier runs bit for bit); other weights
    /// take one uniform f64.
    fn draw(&self, rng: &mut ChaCha8Rng) -> Scheme {
        let w = self.weights();
        if w.iter().all(|&x| x == w[0]) {
            return Scheme::MTM[rng.random_range(0..Scheme::MTM.len())];
        }
        let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
        for (scheme, x) in Scheme::MTM.iter().zip(w) {
            if u < x {
                return *scheme;
            }
            u -= x;
        }
        // Rounding can leave u at the total: the last scheme with weight takes it.
        *Scheme::MTM
            .iter()
            .zip(w)
            .rev()
            .find(|(_, x)| *x > 0.0)
            .map(|(s, _)| s)
            .expect("validated: one weight above 0")
    }
}

/// Masking ratios.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ratios {
    /// Probability of masking a bin (temporal), a unit (neuron), or a unit inside the
    /// chosen region (intra-region). Paper: 0.3.
    pub ratio: f64,
    /// Probability of masking a bin under the causal scheme. Paper: 0.6 inside MtM.
    pub causal_ratio: f64,
}

impl Default for Ratios {
    fn default() -> Self {
        Self {
            ratio: 0.3,
            causal_ratio: 0.6,
        }
    }
}

/// One trial's mask, `(T, N)` row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialMask {
    /// Entries set to 0 in the model's input.
    pub input_zeroed: Vec<bool>,
    /// Entries the loss is computed on.
    pub scored: Vec<bool>,
}

/// A batch's model input, targets and scored mask as host vectors `(B, T, N)`.
pub struct MaskedBatch {
    /// Counts with masked entries zeroed.
    pub input: Vec<f32>,
    /// The scored entries (1.0) and the others (0.0).
    pub scored: Vec<f32>,
}

/// Draws one mask per trial of `batch` under `scheme` and applies it.
pub fn mask_batch(
    batch: &mtm_dataloader::Batch,
    scheme: Scheme,
    regions: &[usize],
    ratios: Ratios,
    rng: &mut ChaCha8Rng,
) -> MaskedBatch {
    let per_trial = batch.n_bins * batch.n_units;
    let mut input = batch.spikes.clone();
    let mut scored = vec![0.0f32; input.len()];
    for k in 0..batch.len() {
        let mask = draw(scheme, batch.n_bins, regions, ratios, rng);
        let range = k * per_trial..(k + 1) * per_trial;
        for ((x, s), (&zero, &score)) in input[range.clone()]
            .iter_mut()
            .zip(&mut scored[range])
            .zip(mask.input_zeroed.iter().zip(&mask.scored))
        {
            if zero {
                *x = 0.0;
            }
            if score {
                *s = 1.0;
            }
        }
    }
    MaskedBatch { input, scored }
}

/// Draws indices with probability `p` each, at least one (a mask that scores nothing
/// would make the step's loss undefined).
fn bernoulli_at_least_one(rng: &mut ChaCha8Rng, n: usize, p: f64) -> Vec<bool> {
    let mut picked: Vec<bool> = (0..n).map(|_| rng.random_bool(p.clamp(0.0, 1.0))).collect();
    if n > 0 && !picked.iter().any(|&b| b) {
        picked[rng.random_range(0..n)] = true;
    }
    picked
}

/// Each unit's region as a small integer (regions numbered in name order), the form
/// [`draw`] and the evaluation take.
pub fn region_indices(regions: &[String]) -> Vec<usize> {
    let mut names: Vec<&String> = regions.iter().collect();
    names.sort();
    names.dedup();
    regions
        .iter()
        .map(|r| names.binary_search(&r).expect("present"))
        .collect()
}

/// Draws one trial's mask. `regions[u]` is unit u's region index.
pub fn draw(
    scheme: Scheme,
    n_bins: usize,
    regions: &[usize],
    ratios: Ratios,
    rng: &mut ChaCha8Rng,
) -> TrialMask {
    let n = regions.len();
    let mut input_zeroed = vec![false; n_bins * n];
    let mut scored = vec![false; n_bins * n];
    let set_bins = |bins: &[bool], input: &mut Vec<bool>, loss: &mut Vec<bool>| {
        for (t, _) in bins.iter().enumerate().filter(|(_, b)| **b) {
            input[t * n..(t + 1) * n].iter_mut().for_each(|x| *x = true);
            loss[t * n..(t + 1) * n].iter_mut().for_each(|x| *x = true);
        }
    };
    let set_units = |units: &dyn Fn(usize) -> bool, target: &mut Vec<bool>| {
        for t in 0..n_bins {
            for u in (0..n).filter(|&u| units(u)) {
                target[t * n + u] = true;
            }
        }
    };
    match scheme {
        Scheme::Temporal => set_bins(
            &bernoulli_at_least_one(rng, n_bins, ratios.ratio),
            &mut input_zeroed,
            &mut scored,
        ),
        Scheme::Causal => set_bins(
            &bernoulli_at_least_one(rng, n_bins, ratios.causal_ratio),
            &mut input_zeroed,
            &mut scored,
        ),
        Scheme::Neuron => {
            let units = bernoulli_at_least_one(rng, n, ratios.ratio);
            set_units(&|u| units[u], &mut input_zeroed);
            set_units(&|u| units[u], &mut scored);
        }
        Scheme::InterRegion | Scheme::IntraRegion => {
            let mut present: Vec<usize> = regions.to_vec();
            present.sort_unstable();
            present.dedup();
            let region = present[rng.random_range(0..present.len())];
            if scheme == Scheme::InterRegion {
                set_units(&|u| regions[u] == region, &mut input_zeroed);
                set_units(&|u| regions[u] == region, &mut scored);
            } else {
                let inside: Vec<usize> = (0..n).filter(|&u| regions[u] == region).collect();
                let held = bernoulli_at_least_one(rng, inside.len(), ratios.ratio);
                let mut held_out = vec![false; n];
                for (&u, _) in inside.iter().zip(&held).filter(|(_, h)| **h) {
                    held_out[u] = true;
                }
                set_units(&|u| regions[u] != region || held_out[u], &mut input_zeroed);
                set_units(&|u| held_out[u], &mut scored);
            }
        }
    }
    TrialMask {
        input_zeroed,
        scored,
    }
}

/// A short hash of which entries a mask scores (for debug logs that compare ranks).
pub fn scored_fingerprint(scored: &[f32]) -> u64 {
    scored
        .iter()
        .enumerate()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, (i, &v)| {
            if v > 0.0 {
                (h ^ i as u64).wrapping_mul(0x100_0000_01b3)
            } else {
                h
            }
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;

    use mtm_dataloader::streams::training_masks;

    use super::*;

    fn regions() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(0usize..5, 1..40)
    }

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// Bins whose every unit is set, and units whose every bin is set.
    fn full_bins(m: &[bool], t: usize, n: usize) -> Vec<bool> {
        (0..t)
            .map(|b| m[b * n..(b + 1) * n].iter().all(|&x| x))
            .collect()
    }

    proptest! {
        #[test]
        fn temporal_and_causal_mask_whole_bins(regions in regions(), seed: u64, causal: bool) {
            let (t, n) = (20, regions.len());
            let scheme = if causal { Scheme::Causal } else { Scheme::Temporal };
            let m = draw(scheme, t, &regions, Ratios::default(), &mut rng(seed));
            prop_assert_eq!(&m.input_zeroed, &m.scored);
            let bins = full_bins(&m.scored, t, n);
            for (b, &whole) in bins.iter().enumerate() {
                let any = m.scored[b * n..(b + 1) * n].iter().any(|&x| x);
                prop_assert_eq!(any, whole, "a bin is masked whole or not at all");
            }
            prop_assert!(bins.iter().any(|&b| b));
            prop_assert_eq!(scheme.causal(), causal);
        }

        #[test]
        fn neuron_masks_whole_units(regions in regions(), seed: u64) {
            let (t, n) = (20, regions.len());
            let m = draw(Scheme::Neuron, t, &regions, Ratios::default(), &mut rng(seed));
            prop_assert_eq!(&m.input_zeroed, &m.scored);
            let mut any = false;
            for u in 0..n {
                let column: Vec<bool> = (0..t).map(|b| m.scored[b * n + u]).collect();
                prop_assert!(column.iter().all(|&x| x) || column.iter().all(|&x| !x));
                any |= column[0];
            }
            prop_assert!(any);
        }

        #[test]
        fn inter_region_masks_exactly_one_region(regions in regions(), seed: u64) {
            let (t, n) = (10, regions.len());
            let m = draw(Scheme::InterRegion, t, &regions, Ratios::default(), &mut rng(seed));
            prop_assert_eq!(&m.input_zeroed, &m.scored);
            let masked: Vec<usize> = (0..n).filter(|&u| m.scored[u]).collect();
            prop_assert!(!masked.is_empty());
            let region = regions[masked[0]];
            for (u, &r) in regions.iter().enumerate() {
                for b in 0..t {
                    prop_assert_eq!(m.scored[b * n + u], r == region);
                }
            }
        }

        #[test]
        fn intra_region_hides_the_rest_and_scores_held_out_units_inside(regions in regions(), seed: u64) {
            let (t, n) = (10, regions.len());
            let m = draw(Scheme::IntraRegion, t, &regions, Ratios::default(), &mut rng(seed));
            let scored: Vec<usize> = (0..n).filter(|&u| m.scored[u]).collect();
            prop_assert!(!scored.is_empty());
            let region = regions[scored[0]];
            for (u, &r) in regions.iter().enumerate() {
                for b in 0..t {
                    let i = b * n + u;
                    if r != region {
                        prop_assert!(m.input_zeroed[i] && !m.scored[i], "outside: hidden, not scored");
                    } else {
                        prop_assert_eq!(m.input_zeroed[i], m.scored[i], "inside: hidden exactly when scored");
                        prop_assert_eq!(m.scored[i], m.scored[u], "inside: whole units");
                    }
                }
            }
        }

        #[test]
        fn masks_are_a_pure_function_of_the_stream_key(seed: u64, epoch in 0u64..4, step in 0u64..100) {
            let regions = [0, 0, 1, 2, 2, 2];
            let a = draw(Scheme::Neuron, 8, &regions, Ratios::default(), &mut training_masks(seed, epoch, step));
            let b = draw(Scheme::Neuron, 8, &regions, Ratios::default(), &mut training_masks(seed, epoch, step));
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn neighbouring_batches_draw_different_masks() {
        let regions: Vec<usize> = (0..50).map(|u| u % 4).collect();
        let a = draw(
            Scheme::Neuron,
            10,
            &regions,
            Ratios::default(),
            &mut training_masks(1, 0, 5),
        );
        let b = draw(
            Scheme::Neuron,
            10,
            &regions,
            Ratios::default(),
            &mut training_masks(1, 0, 6),
        );
        assert_ne!(a, b);
    }

    #[test]
    fn ratios_are_respected_on_average() {
        let regions = vec![0usize; 200];
        let mut stream = rng(3);
        let masked: usize = (0..50)
            .map(|_| {
                draw(Scheme::Neuron, 1, &regions, Ratios::default(), &mut stream)
                    .scored
                    .iter()
                    .filter(|&&x| x)
                    .count()
            })
            .sum();
        let fraction = masked as f64 / (50.0 * 200.0);
        assert!((fraction - 0.3).abs() < 0.02, "{fraction}");
    }

    #[test]
    fn a_weighted_mix_draws_schemes_in_proportion() {
        let mix = Mix {
            neuron: 5.0,
            causal: 1.0,
            inter_region: 0.0,
            intra_region: 2.0,
        };
        assert!(mix.problems().is_empty());
        let mut stream = rng(4);
        let mut counts = std::collections::HashMap::new();
        let n = 8000;
        for _ in 0..n {
            *counts
                .entry(Masking::Mtm.choose(&mix, &mut stream).0)
                .or_insert(0usize) += 1;
        }
        for (scheme, p) in Scheme::MTM.iter().zip(mix.probabilities()) {
            let seen = *counts.get(scheme).unwrap_or(&0) as f64 / n as f64;
            // 4 standard deviations of a binomial proportion at n = 8000 is below 0.022.
            assert!((seen - p).abs() < 0.022, "{scheme:?}: {seen} vs {p}");
        }
        assert_eq!(
            counts.get(&Scheme::InterRegion),
            None,
            "weight 0 is never drawn"
        );
    }

    #[test]
    fn bad_mix_weights_are_named() {
        let mut mix = Mix {
            causal: -1.0,
            ..Mix::default()
        };
        assert_eq!(
            mix.problems(),
            ["masking.mix.causal must be a finite weight >= 0, not -1"]
        );
        mix = Mix {
            neuron: 0.0,
            causal: 0.0,
            inter_region: 0.0,
            intra_region: 0.0,
        };
        assert_eq!(mix.problems().len(), 1);
    }

    #[test]
    fn mtm_draws_all_four_schemes_with_their_prompts() {
        let mut stream = rng(9);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (scheme, prompt) = Masking::Mtm.choose(&Mix::default(), &mut stream);
            assert_eq!(prompt, Some(scheme.prompt()));
            seen.insert(scheme);
        }
        assert_eq!(seen.len(), 4);
        assert!(!seen.contains(&Scheme::Temporal));
        assert_eq!(
            Masking::MtmNotPrompted
                .choose(&Mix::default(), &mut stream)
                .1,
            None
        );
    }
}
