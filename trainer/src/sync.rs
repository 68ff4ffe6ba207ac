//! The small message every rank sends before a step's gradients travel: which parameters
//! it touched, whether its loss and gradients are finite, its loss and trial count, and
//! whether it was asked to stop. All ranks sum the encoded vectors with one all-reduce and
//! decode the same [`StepAgreement`], so they take the same decision (skip, stop, which
//! parameters AdamW steps) without another round trip. Before the first step, the ranks
//! check that they start from the same parameters ([`check_same_parameters`]).

use mtm_cluster::{Collective, CollectiveError, ReduceOp};

use crate::model::Ndt;

/// One rank's side of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Per parameter (in the flat gradient buffer's order), whether this rank's batches
    /// gave it a gradient.
    pub touched: Vec<bool>,
    /// Whether this rank's loss or gradients are not finite.
    pub failed: bool,
    /// Sum of this rank's micro-batch losses.
    pub loss_sum: f64,
    /// Trials this rank trained on.
    pub trials: usize,
    /// Whether this rank was asked to stop (a signal).
    pub stop: bool,
}

/// What all ranks agree on after exchanging their [`StepReport`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct StepAgreement {
    /// Per parameter, whether any rank touched it.
    pub touched: Vec<bool>,
    /// The ranks whose loss or gradients are not finite, in order.
    pub failed: Vec<usize>,
    /// Sum of every rank's micro-batch losses.
    pub loss_sum: f64,
    /// Trials of every rank.
    pub trials: usize,
    /// Whether any rank was asked to stop.
    pub stop: bool,
}

impl StepReport {
    /// The vector whose sum over ranks [`StepAgreement::decode`] reads: the touched flags,
    /// one failure slot per rank (this rank fills its own), loss, trials, stop. f32 because
    /// it travels with the gradients' collective; a trial count is exact in f32 up to 2^24.
    pub fn encode(&self, rank: usize, world: usize) -> Vec<f32> {
        let n = self.touched.len();
        let mut v = vec![0.0f32; n + world + 3];
        for (slot, &t) in v.iter_mut().zip(&self.touched) {
            *slot = f32::from(u8::from(t));
        }
        v[n + rank] = f32::from(u8::from(self.failed));
        v[n + world] = self.loss_sum as f32;
        v[n + world + 1] = self.trials as f32;
        v[n + world + 2] = f32::from(u8::from(self.stop));
        v
    }

    /// Sums every rank's report over `comm` and decodes the agreement.
    pub fn exchange(&self, comm: &mut dyn Collective) -> Result<StepAgreement, CollectiveError> {
        let (rank, world) = (comm.rank(), comm.world_size());
        let mut v = self.encode(rank, world);
        comm.all_reduce(&mut v, ReduceOp::Sum)?;
        Ok(StepAgreement::decode(&v, self.touched.len(), world))
    }
}

impl StepAgreement {
    /// Reads the sum of `world` ranks' [`StepReport::encode`] vectors for `n_params`
    /// parameters.
    pub fn decode(summed: &[f32], n_params: usize, world: usize) -> Self {
        debug_assert_eq!(summed.len(), n_params + world + 3);
        Self {
            touched: summed[..n_params].iter().map(|&s| s > 0.0).collect(),
            failed: (0..world).filter(|&r| summed[n_params + r] > 0.0).collect(),
            loss_sum: f64::from(summed[n_params + world]),
            trials: summed[n_params + world + 1] as usize,
            stop: summed[n_params + world + 2] > 0.0,
        }
    }
}

/// A fingerprint of every parameter value, in the model's fixed parameter order.
fn parameter_fingerprint(model: &Ndt) -> u64 {
    model
        .parameter_values()
        .into_iter()
        .flat_map(f32::to_le_bytes)
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Checks that every rank starts from rank 0's parameters (same seed, checkpoint and
/// build); the error names the ranks that differ.
pub fn check_same_parameters(
    comm: &mut dyn Collective,
    model: &Ndt,
    step: u64,
) -> Result<(), CollectiveError> {
    let fingerprint = parameter_fingerprint(model);
    let mut root = fingerprint.to_le_bytes();
    comm.broadcast(&mut root, 0)?;
    let same = comm.all_gather(&[f64::from(u8::from(root == fingerprint.to_le_bytes()))])?;
    let differ: Vec<usize> = (0..comm.world_size()).filter(|&r| same[r] == 0.0).collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(CollectiveError::Mismatch {
        rank: comm.rank(),
        step,
        message: format!(
            "the initial parameters of rank(s) {differ:?} differ from rank 0's (different seeds, checkpoints or builds?)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mtm_cluster::ThreadCollective;

    use super::*;

    fn report(rank: usize) -> StepReport {
        StepReport {
            touched: (0..5).map(|p| p == rank || p == 4).collect(),
            failed: rank == 1,
            loss_sum: 0.25 * (rank + 1) as f64,
            trials: 16,
            stop: rank == 2,
        }
    }

    #[test]
    fn three_ranks_agree_on_what_they_reported() {
        let handles: Vec<_> = ThreadCollective::group(3, Duration::from_secs(10))
            .into_iter()
            .map(|mut comm| {
                std::thread::spawn(move || report(comm.rank()).exchange(&mut comm).unwrap())
            })
            .collect();
        let agreements: Vec<StepAgreement> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let want = StepAgreement {
            touched: vec![true, true, true, false, true],
            failed: vec![1],
            loss_sum: 1.5,
            trials: 48,
            stop: true,
        };
        for a in agreements {
            assert_eq!(a, want);
        }
    }

    #[test]
    fn one_rank_decodes_its_own_report() {
        let r = StepReport {
            touched: vec![false, true],
            failed: false,
            loss_sum: 0.75,
            trials: 8,
            stop: false,
        };
        let a = StepAgreement::decode(&r.encode(0, 1), 2, 1);
        assert_eq!(
            (a.touched, a.failed, a.loss_sum, a.trials, a.stop),
            (vec![false, true], vec![], 0.75, 8, false)
        );
    }
}
