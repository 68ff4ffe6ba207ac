//! The operations ranks perform together, behind one trait, and what every backend shares:
//! errors that name rank, step and sequence number, and a log of the recent collectives.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// How an all-reduce combines the ranks' buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise sum divided by the world size.
    Mean,
}

/// A collective that failed. A timed-out collective cannot be cancelled (MPI and NCCL
/// have no way to withdraw from one), so backends end the process after reporting it; the
/// other variants are returned.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// Slurm's `sbatch` could not submit a job script.
    #[error("sbatch {script}: {message}")]
    Submit {
        /// The script.
        script: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The backend could not be started.
    #[error("cannot start the {backend} backend: {message}")]
    Init {
        /// Which backend.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The run needs a backend this binary was built without.
    #[error(
        "{launcher} started this process as rank {rank} of {world}, but this mtm was built without {what}: rebuild it with `cargo build --release --features {feature}` (see the README)"
    )]
    NotBuilt {
        /// The launcher that started the run.
        launcher: String,
        /// This process's rank.
        rank: usize,
        /// Number of processes.
        world: usize,
        /// What is missing, in words.
        what: &'static str,
        /// The cargo feature of the `mtm` binary that provides it.
        feature: &'static str,
    },
    /// A backend call returned an error.
    #[error("rank {rank}, step {step}: collective #{seq} ({op}) failed: {message}")]
    Backend {
        /// This process's rank.
        rank: usize,
        /// The training step set by the caller.
        step: u64,
        /// The collective's sequence number on this rank.
        seq: u64,
        /// The operation.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// A collective did not complete in time.
    #[error(
        "rank {rank}, step {step}: collective #{seq} ({op}) did not complete within {timeout:?}; {}; last collectives on this rank: {recent}",
        lost_ranks(.lost)
    )]
    Timeout {
        /// This process's rank.
        rank: usize,
        /// The training step set by the caller.
        step: u64,
        /// The collective's sequence number.
        seq: u64,
        /// The operation.
        op: &'static str,
        /// The configured timeout.
        timeout: Duration,
        /// Ranks that did not answer the diagnosis after the timeout.
        lost: Vec<usize>,
        /// The last collectives this rank completed.
        recent: CollectiveLog,
    },
    /// A [`DeviceBuffer`] handed to a collective could not be read, written or located.
    #[error(
        "rank {rank}, step {step}: the gradient buffer on the device could not be {what}: {message}"
    )]
    DeviceBuffer {
        /// This process's rank.
        rank: usize,
        /// The training step set by the caller.
        step: u64,
        /// What was attempted: "read", "written", "located".
        what: &'static str,
        /// The device's message.
        message: String,
    },
    /// The ranks disagree about something that must be identical.
    #[error("rank {rank}, step {step}: {message}")]
    Mismatch {
        /// This process's rank.
        rank: usize,
        /// The training step set by the caller.
        step: u64,
        /// What differs.
        message: String,
    },
}

fn lost_ranks(lost: &[usize]) -> String {
    match lost {
        [] => "every rank answered the diagnosis (a rank may be slow rather than lost: raise the timeout)".into(),
        [one] => format!("rank {one} is lost (stopped or dead: it did not answer)"),
        many => format!("ranks {many:?} are lost (stopped or dead: they did not answer)"),
    }
}

/// Collective operations between the processes of a run. Every rank must call the same
/// operations in the same order with buffers of the same length; a backend numbers them
/// (the sequence number in errors) and times each out.
pub trait Collective {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn world_size(&self) -> usize;
    /// Backend name for logs: `single`, `mpi`, `nccl`.
    fn backend(&self) -> &'static str;
    /// The training step reported in errors from now on.
    fn set_step(&mut self, step: u64);
    /// Combines `buffer` across ranks in place; every rank ends with the same values.
    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError>;
    /// Copies `root`'s `buffer` into every other rank's.
    fn broadcast(&mut self, buffer: &mut [u8], root: usize) -> Result<(), CollectiveError>;
    /// Returns when every rank has called it.
    fn barrier(&mut self) -> Result<(), CollectiveError>;
    /// Every rank's `values`, rank after rank (for small metrics: exact, in f64).
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError>;
    /// Combines a buffer that lives on a compute device across ranks in place, in
    /// consecutive buckets of at most `bucket_elems` floats (as [`all_reduce_bucketed`]).
    /// A collective over host memory stages it through one reusable host buffer
    /// ([`HostStaging`]: one read, one write); NCCL reduces it where it is. With one rank
    /// nothing moves.
    fn all_reduce_device(
        &mut self,
        buffer: &mut dyn DeviceBuffer,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError>;
}

/// Floats that live in a compute device's memory, as a collective sees them: the trainer's
/// flat gradient buffer on a GPU backend. The trait keeps this crate free of the tensor
/// library: the trainer implements it over its tensor, and a collective asks only for what
/// it can use (a copy through the host, or the CUDA address to reduce in place).
pub trait DeviceBuffer {
    /// Floats in the buffer.
    fn len(&self) -> usize;
    /// Whether the buffer holds no floats.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the floats into `host` (`host.len() == self.len()`): one device-to-host copy.
    fn read(&mut self, host: &mut [f32]) -> Result<(), String>;
    /// Overwrites the floats with `host`: one host-to-device copy.
    fn write(&mut self, host: &[f32]) -> Result<(), String>;
    /// Calls `reduce` with the CUDA device address of the first float, after every kernel
    /// that writes the buffer has finished, and keeps the memory in place until it
    /// returns; `reduce` must have finished with the memory (its stream synchronised)
    /// when it returns. `Ok(None)` without calling it when the buffer is not in CUDA
    /// memory; `Err` when the buffer could not be located.
    fn on_cuda(
        &mut self,
        reduce: &mut dyn FnMut(u64) -> Result<(), CollectiveError>,
    ) -> Result<Option<Result<(), CollectiveError>>, String>;
}

/// The one host buffer through which a collective over host memory (MPI, threads) reduces
/// a [`DeviceBuffer`]: one read into it, [`all_reduce_bucketed`] over it, one write back.
/// It grows to the largest buffer seen and never shrinks, so from the second step on it
/// allocates nothing.
#[derive(Debug, Default)]
pub struct HostStaging {
    host: Vec<f32>,
}

impl HostStaging {
    /// Reduces `buffer` across the ranks of `collective` through the host; `step` names
    /// the training step in errors.
    pub fn all_reduce(
        &mut self,
        collective: &mut dyn Collective,
        step: u64,
        buffer: &mut dyn DeviceBuffer,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        if collective.world_size() == 1 {
            return Ok(());
        }
        let rank = collective.rank();
        let failed = |what, message| CollectiveError::DeviceBuffer {
            rank,
            step,
            what,
            message,
        };
        let len = buffer.len();
        if self.host.len() < len {
            self.host.resize(len, 0.0);
        }
        let host = &mut self.host[..len];
        buffer.read(host).map_err(|m| failed("read", m))?;
        all_reduce_bucketed(collective, host, bucket_elems, op)?;
        buffer.write(host).map_err(|m| failed("written", m))
    }

    /// Floats the staging buffer holds room for (constant once the largest buffer is seen).
    pub fn capacity(&self) -> usize {
        self.host.capacity()
    }
}

/// All-reduces `buffer` in consecutive buckets of at most `bucket_elems` values, in the
/// same order on every rank (the buffer's layout is fixed by the model, so the buckets
/// are too). Buckets bound the scratch memory a backend needs and are the unit a backward
/// pass could hand over as soon as its gradients are final.
pub fn all_reduce_bucketed(
    collective: &mut dyn Collective,
    buffer: &mut [f32],
    bucket_elems: usize,
    op: ReduceOp,
) -> Result<(), CollectiveError> {
    if collective.world_size() == 1 {
        return Ok(());
    }
    for bucket in buffer.chunks_mut(bucket_elems.max(1)) {
        collective.all_reduce(bucket, op)?;
    }
    Ok(())
}

/// Every rank's `bytes`, rank after rank, as every rank sees them. The lengths go round
/// with one [`Collective::all_gather`], then each rank's bytes with one
/// [`Collective::broadcast`] from it. Built on the trait rather than added to it, so every
/// backend has it at once; meant for results of kilobytes to megabytes (evaluation
/// reports), not for gradients.
pub fn all_gather_bytes(
    collective: &mut dyn Collective,
    bytes: &[u8],
) -> Result<Vec<Vec<u8>>, CollectiveError> {
    if collective.world_size() == 1 {
        return Ok(vec![bytes.to_vec()]);
    }
    // Lengths travel as f64: exact below 2^53 bytes.
    let lengths = collective.all_gather(&[bytes.len() as f64])?;
    let mut out = Vec::with_capacity(lengths.len());
    for (root, &len) in lengths.iter().enumerate() {
        let mut buffer = if root == collective.rank() {
            bytes.to_vec()
        } else {
            vec![0u8; len as usize]
        };
        if !buffer.is_empty() {
            collective.broadcast(&mut buffer, root)?;
        }
        out.push(buffer);
    }
    Ok(out)
}

/// One completed collective, for the dump on failure.
#[derive(Clone, Debug)]
pub struct LoggedCollective {
    /// Sequence number.
    pub seq: u64,
    /// Operation.
    pub op: &'static str,
    /// Elements (or bytes for broadcast).
    pub len: usize,
    /// Training step.
    pub step: u64,
    /// How long it took.
    pub took: Duration,
}

/// The last few collectives of a rank, oldest first.
#[derive(Clone, Debug, Default)]
pub struct CollectiveLog {
    entries: VecDeque<LoggedCollective>,
}

impl CollectiveLog {
    const KEEP: usize = 8;

    /// Records a completed collective, forgetting the oldest beyond the last eight.
    pub fn push(&mut self, entry: LoggedCollective) {
        if self.entries.len() == Self::KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The recorded collectives, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &LoggedCollective> {
        self.entries.iter()
    }
}

impl fmt::Display for CollectiveLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return write!(f, "none");
        }
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(
                f,
                "#{} {} of {} at step {} in {:.1} ms",
                e.seq,
                e.op,
                e.len,
                e.step,
                e.took.as_secs_f64() * 1e3
            )?;
        }
        Ok(())
    }
}

/// The collective of a run with one process: every operation is the identity.
#[derive(Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn set_step(&mut self, _step: u64) {}
    fn all_reduce(&mut self, _buffer: &mut [f32], _op: ReduceOp) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn broadcast(&mut self, _buffer: &mut [u8], _root: usize) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        Ok(values.to_vec())
    }
    fn all_reduce_device(
        &mut self,
        _buffer: &mut dyn DeviceBuffer,
        _bucket_elems: usize,
        _op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the buckets it is handed; sums with a fictitious second rank holding ones.
    struct Recorder {
        calls: Vec<usize>,
    }

    impl Collective for Recorder {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn backend(&self) -> &'static str {
            "recorder"
        }
        fn set_step(&mut self, _step: u64) {}
        fn all_reduce(&mut self, buffer: &mut [f32], _op: ReduceOp) -> Result<(), CollectiveError> {
            self.calls.push(buffer.len());
            buffer.iter_mut().for_each(|v| *v += 1.0);
            Ok(())
        }
        fn broadcast(&mut self, _: &mut [u8], _: usize) -> Result<(), CollectiveError> {
            Ok(())
        }
        fn barrier(&mut self) -> Result<(), CollectiveError> {
            Ok(())
        }
        fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
            Ok(values.to_vec())
        }
        fn all_reduce_device(
            &mut self,
            buffer: &mut dyn DeviceBuffer,
            bucket_elems: usize,
            op: ReduceOp,
        ) -> Result<(), CollectiveError> {
            HostStaging::default().all_reduce(self, 0, buffer, bucket_elems, op)
        }
    }

    #[test]
    fn buckets_cover_the_buffer_in_order() {
        let mut r = Recorder { calls: vec![] };
        let mut buffer: Vec<f32> = (0..10).map(|i| i as f32).collect();
        all_reduce_bucketed(&mut r, &mut buffer, 4, ReduceOp::Sum).unwrap();
        assert_eq!(r.calls, vec![4, 4, 2]);
        assert_eq!(buffer, (1..11).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn host_staging_allocates_once_for_buffers_of_one_length() {
        let mut r = Recorder { calls: vec![] };
        let mut staging = HostStaging::default();
        let mut buffer = crate::conformance::CountingBuffer {
            values: vec![1.0; 1000],
            reads: 0,
            writes: 0,
        };
        staging
            .all_reduce(&mut r, 0, &mut buffer, 300, ReduceOp::Sum)
            .unwrap();
        let capacity = staging.capacity();
        let address = staging.host.as_ptr();
        for _ in 0..5 {
            staging
                .all_reduce(&mut r, 0, &mut buffer, 300, ReduceOp::Sum)
                .unwrap();
        }
        assert_eq!(
            (staging.capacity(), staging.host.as_ptr()),
            (capacity, address)
        );
        assert_eq!((buffer.reads, buffer.writes), (6, 6));
        // The fictitious peer adds one per call, in buckets of 300 (4 per call).
        assert_eq!(buffer.values, vec![7.0; 1000]);
        assert_eq!(r.calls.len(), 24);
    }

    #[test]
    fn timeout_message_names_rank_step_and_sequence() {
        let mut recent = CollectiveLog::default();
        for seq in 0..10 {
            recent.push(LoggedCollective {
                seq,
                op: "all-reduce",
                len: 3,
                step: seq / 2,
                took: Duration::from_millis(2),
            });
        }
        assert_eq!(recent.entries().count(), 8);
        let err = CollectiveError::Timeout {
            rank: 0,
            step: 7,
            seq: 12,
            op: "all-reduce",
            timeout: Duration::from_secs(5),
            lost: vec![1],
            recent,
        };
        let text = err.to_string();
        assert!(
            text.contains("rank 0, step 7: collective #12 (all-reduce)"),
            "{text}"
        );
        assert!(text.contains("rank 1 is lost"), "{text}");
        assert!(text.contains("#9 all-reduce of 3 at step 4"), "{text}");
        assert!(!text.contains("#1 all-reduce"), "{text}");
    }
}
