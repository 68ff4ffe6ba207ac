//! The baseline's Poisson GLM against scikit-learn's `PoissonRegressor` on the same data.

use mtm_tests::run_python;
use mtm_trainer::baseline::PoissonGlm;

/// A fixed problem: correlated features of different scales, counts from a known GLM.
fn problem(n: usize, p: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    // A small LCG keeps the test free of random-number crates and fully reproducible.
    let mut state = seed;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity(n * p);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let shared = uniform() * 2.0 - 1.0;
        let row: Vec<f64> = (0..p)
            .map(|j| (0.5 * shared + uniform() - 0.5) * (1.0 + j as f64))
            .collect();
        let eta: f64 = -1.2
            + row
                .iter()
                .enumerate()
                .map(|(j, v)| v * 0.3 / (1.0 + j as f64) * if j % 2 == 0 { 1.0 } else { -1.0 })
                .sum::<f64>();
        // Poisson by inversion.
        let (u, rate) = (uniform(), eta.exp());
        let (mut k, mut prob) = (0.0, (-rate).exp());
        let mut cdf = prob;
        while u > cdf && k < 50.0 {
            k += 1.0;
            prob *= rate / k;
            cdf += prob;
        }
        x.extend(row);
        y.push(k);
    }
    (x, y)
}

#[test]
fn poisson_glm_matches_scikit_learn() {
    let (n, p) = (3000, 6);
    let (x, y) = problem(n, p, 11);
    let (x_new, _) = problem(200, p, 12);
    let dir = tempfile::tempdir().unwrap();
    for alpha in [0.0, 1e-3, 0.1] {
        let path = dir.path().join(format!("problem-{alpha}.json"));
        let rows = |v: &[f64]| v.chunks(p).map(|r| r.to_vec()).collect::<Vec<_>>();
        let json =
            serde_json::json!({"x": rows(&x), "y": y, "alpha": alpha, "x_new": rows(&x_new)});
        std::fs::write(&path, json.to_string()).unwrap();
        let out: serde_json::Value =
            serde_json::from_str(&run_python("glm_sklearn.py", &[path.to_str().unwrap()])).unwrap();
        let glm = PoissonGlm::fit(&x, &y, alpha);
        let theirs: Vec<f64> = out["log_rates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let worst = x_new
            .chunks(p)
            .zip(&theirs)
            .map(|(row, t)| (glm.log_rate(row).exp() - t.exp()).abs())
            .fold(0.0f64, f64::max);
        assert!(
            worst < 1e-4,
            "alpha {alpha}: predicted rates differ from scikit-learn's by up to {worst}"
        );
        let intercept = out["intercept"].as_f64().unwrap();
        assert!(
            (glm.intercept - intercept).abs() < 1e-4,
            "alpha {alpha}: intercept {} vs {intercept}",
            glm.intercept
        );
        // The penalty matters on this problem, so the comparison could fail if it were
        // applied differently (to the intercept, or scaled by n).
        if alpha == 0.1 {
            let free = PoissonGlm::fit(&x, &y, 0.0);
            let moved = free
                .coef
                .iter()
                .zip(&glm.coef)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f64, f64::max);
            assert!(moved > 1e-2, "alpha 0.1 barely moved the weights ({moved})");
        }
    }
}
