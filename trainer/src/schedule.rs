//! The one-cycle learning-rate schedule of the paper (spec §5).

/// PyTorch's `OneCycleLR` with cosine annealing in both phases, starting at `peak / 10`
/// (`div_factor = 10`) and ending at `peak / 10 / 1e4` (its default `final_div_factor`):
/// the schedule the official code uses, so that learning rates compare one to one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    /// Peak learning rate.
    pub peak: f64,
    /// Total optimizer steps.
    pub total_steps: u64,
    /// Fraction of the steps spent rising to the peak.
    pub warmup_fraction: f64,
}

impl OneCycle {
    /// The learning rate at `step` (0-based); steps past the end keep the final rate.
    pub fn lr(&self, step: u64) -> f64 {
        let initial = self.peak / 10.0;
        let last = initial / 1e4;
        let total = self.total_steps.max(1) as f64;
        let step = (step as f64).min(total - 1.0);
        let warm_end = self.warmup_fraction * total - 1.0;
        let anneal = |start: f64, end: f64, pct: f64| {
            end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
        };
        if step <= warm_end && warm_end > 0.0 {
            anneal(initial, self.peak, step / warm_end)
        } else {
            let start = warm_end.max(0.0);
            let span = (total - 1.0 - start).max(1.0);
            anneal(self.peak, last, (step - start) / span)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_pytorch_one_cycle() {
        // torch.optim.lr_scheduler.OneCycleLR(max_lr=1e-3, total_steps=100, pct_start=0.15,
        // div_factor=10, anneal_strategy="cos"): lr before steps 0, 7, 14, 50, 99.
        let s = OneCycle {
            peak: 1e-3,
            total_steps: 100,
            warmup_fraction: 0.15,
        };
        let expected = [
            (0, 1e-4),
            (7, 5.5e-4),
            (14, 1e-3),
            (50, 0.000_618_971_407_845_334_3),
            (99, 1e-8),
        ];
        for (step, lr) in expected {
            let got = s.lr(step);
            assert!((got - lr).abs() < 1e-12, "step {step}: {got} vs {lr}");
        }
        assert!(s.lr(200) == s.lr(99));
    }
}
