//! Which units each evaluation copy hides and which it scores (spec §4).
//!
//! The model's evaluation, the smoothing + GLM baseline and the true-rate ceiling all
//! predict the same held-out entries from the same visible ones: this module is the one
//! place that decides them.

use crate::config::Task;

/// One evaluation copy of the trials: the units zeroed in its input and the units scored
/// from it (every scored unit is also zeroed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Units zeroed in the input.
    pub zero: Vec<usize>,
    /// Units whose predictions are scored from this copy.
    pub score: Vec<usize>,
}

/// The probes of a leave-out task (co-smoothing, intra- or inter-region) on a session whose
/// unit `u` lies in region `regions[u]`; `group` units are held out together (1: exact
/// leave-one-out). Forward prediction hides bins, not units, and has no probes.
pub fn probes(task: Task, regions: &[usize], group: usize) -> Vec<Probe> {
    let n = regions.len();
    let group = group.max(1);
    let n_regions = regions.iter().max().map_or(0, |m| m + 1);
    match task {
        Task::CoSmooth => (0..n)
            .collect::<Vec<_>>()
            .chunks(group)
            .map(|units| Probe {
                zero: units.to_vec(),
                score: units.to_vec(),
            })
            .collect(),
        Task::Intra => {
            let mut out = Vec::new();
            for r in 0..n_regions {
                let inside: Vec<usize> = (0..n).filter(|&v| regions[v] == r).collect();
                for held in inside.chunks(group) {
                    out.push(Probe {
                        zero: (0..n)
                            .filter(|&v| regions[v] != r || held.contains(&v))
                            .collect(),
                        score: held.to_vec(),
                    });
                }
            }
            out
        }
        Task::Inter => (0..n_regions)
            .map(|r| {
                let units: Vec<usize> = (0..n).filter(|&v| regions[v] == r).collect();
                Probe {
                    zero: units.clone(),
                    score: units,
                }
            })
            .filter(|p| !p.score.is_empty())
            .collect(),
        Task::Forward | Task::Choice | Task::Whisker => Vec::new(),
    }
}

/// The first bin forward prediction predicts: the last `fraction` of `n_bins` (at least one
/// bin predicted, at least one observed).
pub fn forward_cut(n_bins: usize, fraction: f64) -> usize {
    n_bins - ((n_bins as f64 * fraction).round() as usize).clamp(1, n_bins - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_hide_what_each_task_hides() {
        let regions = [0, 0, 1, 1, 1];
        let co = probes(Task::CoSmooth, &regions, 1);
        assert_eq!(co.len(), 5);
        assert!(co.iter().all(|p| p.zero == p.score && p.zero.len() == 1));
        let intra = probes(Task::Intra, &regions, 1);
        assert_eq!(intra.len(), 5);
        // Unit 2 held out inside region 1: region 0 hidden too, units 3 and 4 visible.
        let p = intra.iter().find(|p| p.score == [2]).unwrap();
        assert_eq!(p.zero, vec![0, 1, 2]);
        let inter = probes(Task::Inter, &regions, 1);
        assert_eq!(inter[1].zero, vec![2, 3, 4]);
        assert_eq!(probes(Task::CoSmooth, &regions, 2).len(), 3);
        assert_eq!(forward_cut(100, 0.1), 90);
        assert_eq!(forward_cut(10, 0.0), 9);
    }
}
