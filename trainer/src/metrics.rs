//! Bits per spike (spec §4), in f64, in the two conventions that papers report.
//!
//! Both take predictions as log expected counts per bin and a mask of the entries that
//! are scored; arrays are `(K trials, T bins, N units)` row-major.
//! - [`bps_per_unit_mean`]: the MtM paper's number: per unit, the Poisson log-likelihood
//!   gain over the unit's own mean count on its scored entries, per spike, in bits; then
//!   the mean over units with at least one scored spike.
//! - [`bps_pooled_nlb`]: the Neural Latents Benchmark's `bits_per_spike`: numerator and
//!   denominator summed over all units (silent units kept, zero rates floored at 1e-9).

/// `ln Γ(y + 1)`, the Poisson normaliser.
fn ln_factorial(y: f64) -> f64 {
    libm::lgamma(y + 1.0)
}

fn poisson_nll(rate: f64, y: f64) -> f64 {
    rate - y * rate.ln() + ln_factorial(y)
}

/// Validates shapes and returns (K·T, N).
fn dims(log_rates: &[f64], counts: &[f64], scored: &[bool], n_units: usize) -> (usize, usize) {
    assert!(n_units > 0, "n_units must be positive");
    assert_eq!(
        log_rates.len(),
        counts.len(),
        "log_rates and counts differ in length"
    );
    assert_eq!(
        scored.len(),
        counts.len(),
        "scored mask and counts differ in length"
    );
    assert_eq!(
        counts.len() % n_units,
        0,
        "length is not a multiple of n_units"
    );
    (counts.len() / n_units, n_units)
}

/// Sum of counts and number of scored entries of one unit.
fn scored_totals(
    counts: &[f64],
    scored: &[bool],
    rows: usize,
    n: usize,
    unit: usize,
) -> (f64, usize) {
    (0..rows)
        .map(|r| r * n + unit)
        .filter(|&i| scored[i])
        .fold((0.0, 0), |(sum, count), i| (sum + counts[i], count + 1))
}

/// Per-unit bits per spike over scored entries: `(bps_n, spikes_n)` for each unit;
/// `bps_n` is `None` for a unit with no scored spike.
pub fn bps_per_unit(
    log_rates: &[f64],
    counts: &[f64],
    scored: &[bool],
    n_units: usize,
) -> Vec<Option<f64>> {
    let (rows, n) = dims(log_rates, counts, scored, n_units);
    let mut out = Vec::with_capacity(n);
    for unit in 0..n {
        let entries = (0..rows).map(|r| r * n + unit).filter(|&i| scored[i]);
        let (sum_y, count) = scored_totals(counts, scored, rows, n, unit);
        if sum_y <= 0.0 {
            out.push(None);
            continue;
        }
        let null_rate = sum_y / count as f64;
        let (mut nll_model, mut nll_null) = (0.0f64, 0.0f64);
        for i in entries {
            let y = counts[i];
            nll_model += poisson_nll(log_rates[i].exp(), y);
            nll_null += poisson_nll(null_rate, y);
        }
        out.push(Some(
            (nll_null - nll_model) / (sum_y * std::f64::consts::LN_2),
        ));
    }
    out
}

/// The MtM paper's bits per spike: the mean of [`bps_per_unit`] over units with spikes.
/// Returns the mean and the number of units it averages; `None` when no unit spiked.
pub fn bps_per_unit_mean(
    log_rates: &[f64],
    counts: &[f64],
    scored: &[bool],
    n_units: usize,
) -> Option<(f64, usize)> {
    let values: Vec<f64> = bps_per_unit(log_rates, counts, scored, n_units)
        .into_iter()
        .flatten()
        .collect();
    (!values.is_empty()).then(|| {
        (
            values.iter().sum::<f64>() / values.len() as f64,
            values.len(),
        )
    })
}

/// The Neural Latents Benchmark's pooled bits per spike over scored entries
/// (`nlb_tools.evaluation.bits_per_spike` with unscored entries as NaN). `None` when no
/// scored entry has a spike.
pub fn bps_pooled_nlb(
    log_rates: &[f64],
    counts: &[f64],
    scored: &[bool],
    n_units: usize,
) -> Option<f64> {
    let (rows, n) = dims(log_rates, counts, scored, n_units);
    let floor = |r: f64| if r == 0.0 { 1e-9 } else { r };
    let (mut nll_model, mut nll_null, mut total) = (0.0f64, 0.0f64, 0.0f64);
    for unit in 0..n {
        let entries = (0..rows).map(|r| r * n + unit).filter(|&i| scored[i]);
        let (sum_y, count) = scored_totals(counts, scored, rows, n, unit);
        if count == 0 {
            continue;
        }
        let null_rate = floor(sum_y / count as f64);
        for i in entries {
            let y = counts[i];
            nll_model += poisson_nll(floor(log_rates[i].exp()), y);
            nll_null += poisson_nll(null_rate, y);
        }
        total += sum_y;
    }
    (total > 0.0).then(|| (nll_null - nll_model) / total / std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `trainer/tests/fixtures/bps_golden.json`: reference values computed with nlb_tools
    /// and the MtM definition.
    fn golden() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/bps_golden.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("the committed fixture"))
            .unwrap()
    }

    fn flat(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|k| k.as_array().unwrap().iter())
            .flat_map(|t| t.as_array().unwrap().iter())
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn both_variants_reproduce_the_golden_values() {
        let g = golden();
        let n = g["counts"][0][0].as_array().unwrap().len();
        let (counts, log_rates) = (flat(&g["counts"]), flat(&g["log_rates"]));
        let scored = vec![true; counts.len()];
        let pooled = bps_pooled_nlb(&log_rates, &counts, &scored, n).unwrap();
        assert!(
            (pooled - g["nlb_pooled"].as_f64().unwrap()).abs() < 1e-9,
            "{pooled}"
        );
        let (mean, units) = bps_per_unit_mean(&log_rates, &counts, &scored, n).unwrap();
        assert!(
            (mean - g["mtm_per_neuron_mean"].as_f64().unwrap()).abs() < 1e-9,
            "{mean}"
        );
        assert_eq!(units as u64, g["units_scored_per_neuron"].as_u64().unwrap());
    }

    #[test]
    fn the_null_model_scores_zero_and_a_better_model_scores_more() {
        // Two units, four bins; unit 0 fires in the last two bins.
        let counts = [0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 2.0, 1.0];
        let null: Vec<f64> = [1.0f64, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5]
            .iter()
            .map(|r| r.ln())
            .collect();
        let scored = [true; 8];
        let per_unit = bps_per_unit(&null, &counts, &scored, 2);
        assert!(
            per_unit.iter().flatten().all(|b| b.abs() < 1e-6),
            "{per_unit:?}"
        );
        let better: Vec<f64> = [0.05f64, 0.5, 0.05, 0.5, 1.95, 0.5, 1.95, 0.5]
            .iter()
            .map(|r| r.ln())
            .collect();
        assert!(bps_per_unit_mean(&better, &counts, &scored, 2).unwrap().0 > 0.1);
        assert!(bps_pooled_nlb(&better, &counts, &scored, 2).unwrap() > 0.1);
    }

    #[test]
    fn unscored_entries_do_not_count() {
        let counts = [3.0, 0.0, 1.0, 0.0];
        let rates: Vec<f64> = [0.1f64, 1.0, 1.0, 1.0].iter().map(|r| r.ln()).collect();
        let all = bps_per_unit(&rates, &counts, &[true; 4], 1)[0].unwrap();
        let some = bps_per_unit(&rates, &counts, &[false, true, true, true], 1)[0].unwrap();
        assert_ne!(all, some);
        assert_eq!(
            bps_per_unit(&rates, &counts, &[false, true, false, true], 1)[0],
            None
        );
    }
}
