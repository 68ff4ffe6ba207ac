//! N ranks as threads of one process: a [`Collective`] with the same contract as MPI and
//! NCCL (same operations, same order on every rank, timeouts that name the silent ranks),
//! so that the conformance suite and the trainer's data-parallel logic run in unit tests
//! without `mpirun`. Unlike MPI, a thread can withdraw from a collective, so a timeout is
//! returned as an error instead of ending the process.
//!
//! Every operation is a rendezvous: each rank deposits its contribution for round `seq`,
//! the last to arrive combines them in rank order (so sums are deterministic), and every
//! rank takes the result; the round is cleared when all have taken it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::collective::{
    Collective, CollectiveError, CollectiveLog, DeviceBuffer, HostStaging, LoggedCollective,
    ReduceOp,
};

/// What a rank brings to a round, and what it takes away.
#[derive(Clone, Debug, PartialEq)]
enum Payload {
    F32(Vec<f32>, ReduceOp),
    Bytes(Vec<u8>, usize),
    F64(Vec<f64>),
    Empty,
}

#[derive(Default)]
struct Round {
    /// Sequence number of the round in progress.
    seq: u64,
    op: Option<&'static str>,
    contributions: Vec<Option<Payload>>,
    result: Option<Result<Payload, String>>,
    taken: usize,
}

struct Shared {
    round: Mutex<Round>,
    changed: Condvar,
}

/// One rank of a group of threads; see the module documentation.
pub struct ThreadCollective {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
    step: u64,
    seq: u64,
    timeout: Duration,
    log: CollectiveLog,
    staging: HostStaging,
}

impl ThreadCollective {
    /// A group of `size` ranks whose every collective times out after `timeout`; hand
    /// element `r` to the thread that plays rank `r`.
    pub fn group(size: usize, timeout: Duration) -> Vec<ThreadCollective> {
        let shared = Arc::new(Shared {
            round: Mutex::new(Round {
                contributions: vec![None; size],
                ..Round::default()
            }),
            changed: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadCollective {
                rank,
                size,
                shared: Arc::clone(&shared),
                step: 0,
                seq: 0,
                timeout,
                log: CollectiveLog::default(),
                staging: HostStaging::default(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A rank that panicked while holding the lock leaves the round as it was; the
        // others then time out naming it, which is what a test wants to see.
        self.shared
            .round
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes part in round `self.seq` with `mine`; returns the combined payload.
    fn round(&mut self, op: &'static str, mine: Payload) -> Result<Payload, CollectiveError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let seq = self.seq;
        let len = match &mine {
            Payload::F32(v, _) => v.len(),
            Payload::Bytes(v, _) => v.len(),
            Payload::F64(v) => v.len(),
            Payload::Empty => 0,
        };
        let mut round = self.lock();
        // Wait for the previous round to be taken by every rank.
        while round.seq != seq {
            round = self.wait(round, deadline, op)?;
        }
        round.contributions[self.rank] = Some(mine);
        if round.op.is_none() {
            round.op = Some(op);
        }
        if round.contributions.iter().all(Option::is_some) {
            let result = combine(round.op.unwrap_or(op), &round.contributions, self.size);
            round.result = Some(result);
            self.shared.changed.notify_all();
        }
        while round.result.is_none() {
            round = self.wait(round, deadline, op)?;
        }
        let result = round.result.clone().expect("set above");
        round.taken += 1;
        if round.taken == self.size {
            let size = self.size;
            *round = Round {
                seq: seq + 1,
                contributions: vec![None; size],
                ..Round::default()
            };
            self.shared.changed.notify_all();
        }
        drop(round);
        self.seq += 1;
        self.log.push(LoggedCollective {
            seq,
            op,
            len,
            step: self.step,
            took: started.elapsed(),
        });
        result.map_err(|message| CollectiveError::Mismatch {
            rank: self.rank,
            step: self.step,
            message: format!("collective #{seq}: {message}"),
        })
    }

    /// Waits for the round to change, or fails naming the ranks that have not arrived.
    fn wait<'a>(
        &self,
        round: MutexGuard<'a, Round>,
        deadline: Instant,
        op: &'static str,
    ) -> Result<MutexGuard<'a, Round>, CollectiveError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let lost = if round.seq == self.seq {
                round
                    .contributions
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.is_none())
                    .map(|(r, _)| r)
                    .collect()
            } else {
                // Still in an earlier round: the ranks that have not taken it are behind,
                // but which ones is not recorded; name none rather than guess.
                Vec::new()
            };
            return Err(CollectiveError::Timeout {
                rank: self.rank,
                step: self.step,
                seq: self.seq,
                op,
                timeout: self.timeout,
                lost,
                recent: self.log.clone(),
            });
        }
        let (round, _) = self
            .shared
            .changed
            .wait_timeout(round, left)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(round)
    }
}

/// Combines every rank's contribution in rank order, or says what the ranks disagree on.
fn combine(op: &'static str, all: &[Option<Payload>], size: usize) -> Result<Payload, String> {
    let all: Vec<&Payload> = all
        .iter()
        .map(|c| c.as_ref().expect("all arrived"))
        .collect();
    let kind = |p: &Payload| std::mem::discriminant(p);
    if all.iter().any(|p| kind(p) != kind(all[0])) {
        return Err(format!(
            "ranks called different operations ({op} on rank 0)"
        ));
    }
    match all[0] {
        Payload::F32(first, reduce) => {
            let mut out = vec![0.0f32; first.len()];
            for p in &all {
                let Payload::F32(v, r) = p else {
                    unreachable!()
                };
                if v.len() != out.len() || r != reduce {
                    return Err(format!(
                        "all-reduce lengths or operations differ between ranks ({} vs {})",
                        first.len(),
                        v.len()
                    ));
                }
                out.iter_mut().zip(v).for_each(|(o, x)| *o += x);
            }
            if *reduce == ReduceOp::Mean {
                out.iter_mut().for_each(|o| *o /= size as f32);
            }
            Ok(Payload::F32(out, *reduce))
        }
        Payload::Bytes(_, root) => {
            let lens: Vec<usize> = all
                .iter()
                .map(|p| match p {
                    Payload::Bytes(v, r) if r == root => Ok(v.len()),
                    _ => Err("broadcast roots differ between ranks".to_string()),
                })
                .collect::<Result<_, _>>()?;
            if lens.iter().any(|&l| l != lens[0]) {
                return Err(format!("broadcast lengths differ between ranks: {lens:?}"));
            }
            if *root >= size {
                return Err(format!("broadcast root {root} is not a rank of {size}"));
            }
            Ok(all[*root].clone())
        }
        Payload::F64(_) => Ok(Payload::F64(
            all.iter()
                .flat_map(|p| match p {
                    Payload::F64(v) => v.clone(),
                    _ => unreachable!(),
                })
                .collect(),
        )),
        Payload::Empty => Ok(Payload::Empty),
    }
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "threads"
    }
    fn set_step(&mut self, step: u64) {
        self.step = step;
    }
    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        if let Payload::F32(out, _) = self.round("all-reduce", Payload::F32(buffer.to_vec(), op))? {
            buffer.copy_from_slice(&out);
        }
        Ok(())
    }
    fn broadcast(&mut self, buffer: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        if let Payload::Bytes(out, _) =
            self.round("broadcast", Payload::Bytes(buffer.to_vec(), root))?
        {
            buffer.copy_from_slice(&out);
        }
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.round("barrier", Payload::Empty).map(|_| ())
    }
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        match self.round("all-gather", Payload::F64(values.to_vec()))? {
            Payload::F64(out) => Ok(out),
            _ => unreachable!("all-gather rounds combine to F64"),
        }
    }
    fn all_reduce_device(
        &mut self,
        buffer: &mut dyn DeviceBuffer,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        let mut staging = std::mem::take(&mut self.staging);
        let step = self.step;
        let result = staging.all_reduce(self, step, buffer, bucket_elems, op);
        self.staging = staging;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    /// Runs `f` on every rank of a group of `n` threads; returns each rank's result.
    fn on_threads<T: Send + 'static>(
        n: usize,
        timeout: Duration,
        f: impl Fn(&mut ThreadCollective) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = ThreadCollective::group(n, timeout)
            .into_iter()
            .map(|mut c| {
                let f = Arc::clone(&f);
                std::thread::spawn(move || f(&mut c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn the_conformance_suite_passes_on_threads() {
        for n in [1, 2, 3] {
            on_threads(n, Duration::from_secs(30), |c| conformance::run_all(c));
        }
    }

    #[test]
    fn a_single_process_conforms_too() {
        conformance::run_all(&mut crate::SingleProcess);
    }

    /// A backend whose mean forgets to divide: the suite must catch it.
    struct MeanIsSum(ThreadCollective);

    impl Collective for MeanIsSum {
        fn rank(&self) -> usize {
            self.0.rank()
        }
        fn world_size(&self) -> usize {
            self.0.world_size()
        }
        fn backend(&self) -> &'static str {
            "broken"
        }
        fn set_step(&mut self, step: u64) {
            self.0.set_step(step)
        }
        fn all_reduce(&mut self, b: &mut [f32], _op: ReduceOp) -> Result<(), CollectiveError> {
            self.0.all_reduce(b, ReduceOp::Sum)
        }
        fn broadcast(&mut self, b: &mut [u8], root: usize) -> Result<(), CollectiveError> {
            self.0.broadcast(b, root)
        }
        fn barrier(&mut self) -> Result<(), CollectiveError> {
            self.0.barrier()
        }
        fn all_gather(&mut self, v: &[f64]) -> Result<Vec<f64>, CollectiveError> {
            self.0.all_gather(v)
        }
        fn all_reduce_device(
            &mut self,
            b: &mut dyn DeviceBuffer,
            bucket: usize,
            _op: ReduceOp,
        ) -> Result<(), CollectiveError> {
            self.0.all_reduce_device(b, bucket, ReduceOp::Sum)
        }
    }

    #[test]
    fn a_broken_backend_fails_the_suite() {
        let handles: Vec<_> = ThreadCollective::group(2, Duration::from_secs(2))
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    conformance::all_reduce_sums_and_means(&mut MeanIsSum(c));
                })
            })
            .collect();
        let panicked = handles
            .into_iter()
            .map(|h| h.join().is_err())
            .filter(|&p| p)
            .count();
        assert_eq!(panicked, 2, "both ranks see the wrong mean");
    }

    #[test]
    fn a_silent_rank_is_named_by_the_others() {
        let errors = on_threads(3, Duration::from_millis(200), |c| {
            conformance::silent_rank_is_named(c, 2)
        });
        assert_eq!(errors.len(), 3);
    }

    #[test]
    fn ranks_that_disagree_are_told() {
        let results = on_threads(2, Duration::from_secs(10), |c| {
            let mut buffer = vec![1.0f32; 3 + c.rank()];
            c.all_reduce(&mut buffer, ReduceOp::Sum)
                .err()
                .map(|e| e.to_string())
        });
        for r in results {
            let message = r.expect("a length mismatch is an error");
            assert!(message.contains("lengths"), "{message}");
        }
    }
}
