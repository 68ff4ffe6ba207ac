//! Collectives over MPI (rsmpi on Open MPI): the CPU backend, and the bootstrap channel of
//! the NCCL one.
//!
//! Every operation is started non-blocking and polled against the timeout, because a
//! blocking MPI call waits forever for a rank that died or stalled. When the timeout
//! passes, the rank asks every peer point-to-point whether it is alive (each live rank
//! is stuck in the same collective and asks too); the peers that do not answer within a
//! grace period are named as lost. MPI cannot withdraw from a started collective, so the
//! process then prints the error, with its last collectives, and exits with status 3.

use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use crate::collective::{
    Collective, CollectiveError, CollectiveLog, DeviceBuffer, HostStaging, LoggedCollective,
    ReduceOp,
};

/// Exit status of a process that gave up on a collective.
pub const TIMEOUT_EXIT_CODE: i32 = 3;

/// Tag of the liveness messages exchanged after a timeout.
const DIAGNOSIS_TAG: i32 = 0x006d_746d;

/// The MPI world as a [`Collective`].
pub struct MpiCollective {
    // Dropped last: finalises MPI.
    _universe: Universe,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    step: u64,
    seq: u64,
    timeout: Duration,
    log: CollectiveLog,
    scratch: Vec<f32>,
    staging: HostStaging,
}

impl MpiCollective {
    /// Initialises MPI (once per process) with a timeout for every collective. Outside
    /// `mpirun` this gives a world of one.
    pub fn init(timeout: Duration) -> Result<Self, CollectiveError> {
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or(CollectiveError::Init {
                backend: "mpi",
                message: "MPI was already initialised in this process".into(),
            })?;
        let world = universe.world();
        Ok(Self {
            rank: world.rank() as usize,
            size: world.size() as usize,
            _universe: universe,
            world,
            step: 0,
            seq: 0,
            timeout,
            log: CollectiveLog::default(),
            scratch: Vec::new(),
            staging: HostStaging::default(),
        })
    }

    /// The timeout of every collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The MPI library's version line.
    pub fn library_version() -> String {
        mpi::environment::library_version()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// One blocking `MPI_Allreduce` (sum) of `send` into `recv`, without bucketing,
    /// scratch copy or timeout: the baseline the benchmark compares the bucketed path with.
    pub fn raw_all_reduce_sum(&self, send: &[f32], recv: &mut [f32]) {
        self.world
            .all_reduce_into(send, recv, SystemOperation::sum());
    }

    /// Polls `request` until it completes; on timeout, names the lost ranks and ends the
    /// process (see the module documentation).
    fn complete<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        mut request: Request<'a, D, S>,
        op: &'static str,
        started: Instant,
    ) {
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            let waited = started.elapsed();
            if waited > self.timeout {
                // The request stays with MPI; the process ends below without dropping it.
                std::mem::forget(request);
                self.give_up(op, self.seq, self.step, &self.log);
            }
            // Open MPI advances a non-blocking collective only inside MPI calls: poll
            // eagerly at first, then back off so a long wait does not burn a core.
            if waited < Duration::from_millis(200) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Sends this rank's sequence number to every peer and waits a grace period for
    /// theirs; the peers that do not answer are the lost ones. Then reports and exits.
    pub(crate) fn give_up(
        &self,
        op: &'static str,
        seq: u64,
        step: u64,
        recent: &CollectiveLog,
    ) -> ! {
        let grace = (self.timeout / 4).clamp(Duration::from_secs(2), Duration::from_secs(30));
        let peers: Vec<usize> = (0..self.size).filter(|&p| p != self.rank).collect();
        let message = [seq];
        let mut answers = vec![[0u64; 1]; peers.len()];
        mpi::request::scope(|scope| {
            let sends: Vec<_> = peers
                .iter()
                .map(|&p| {
                    self.world
                        .process_at_rank(p as i32)
                        .immediate_send_with_tag(scope, &message[..], DIAGNOSIS_TAG)
                })
                .collect();
            let mut receives: Vec<Option<_>> = peers
                .iter()
                .zip(answers.iter_mut())
                .map(|(&p, answer)| {
                    Some(
                        self.world
                            .process_at_rank(p as i32)
                            .immediate_receive_into_with_tag(scope, &mut answer[..], DIAGNOSIS_TAG),
                    )
                })
                .collect();
            let started = Instant::now();
            while started.elapsed() < grace && receives.iter().any(Option::is_some) {
                for slot in receives.iter_mut() {
                    if let Some(request) = slot.take() {
                        *slot = request.test().err();
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let lost = peers
                .iter()
                .zip(&receives)
                .filter(|(_, r)| r.is_some())
                .map(|(&p, _)| p)
                .collect();
            let err = CollectiveError::Timeout {
                rank: self.rank,
                step,
                seq,
                op,
                timeout: self.timeout,
                lost,
                recent: recent.clone(),
            };
            eprintln!("error: {err}");
            // Requests a lost peer never completes stay with MPI: dropping them, or leaving
            // this scope with them registered, would abort instead of exiting.
            receives.into_iter().flatten().for_each(std::mem::forget);
            sends.into_iter().for_each(std::mem::forget);
            std::process::exit(TIMEOUT_EXIT_CODE)
        })
    }

    fn record(&mut self, op: &'static str, len: usize, started: Instant) {
        self.log.push(LoggedCollective {
            seq: self.seq,
            op,
            len,
            step: self.step,
            took: started.elapsed(),
        });
        self.seq += 1;
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        let started = Instant::now();
        // rsmpi has no MPI_IN_PLACE: the send side is a copy.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(buffer);
        mpi::request::scope(|scope| {
            let request = self.world.immediate_all_reduce_into(
                scope,
                &scratch[..],
                &mut *buffer,
                SystemOperation::sum(),
            );
            self.complete(request, "all-reduce", started);
        });
        self.scratch = scratch;
        if op == ReduceOp::Mean {
            let inv = 1.0 / self.size as f32;
            buffer.iter_mut().for_each(|v| *v *= inv);
        }
        self.record("all-reduce", buffer.len(), started);
        Ok(())
    }

    fn broadcast(&mut self, buffer: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        let started = Instant::now();
        mpi::request::scope(|scope| {
            let request = self
                .world
                .process_at_rank(root as i32)
                .immediate_broadcast_into(scope, &mut *buffer);
            self.complete(request, "broadcast", started);
        });
        self.record("broadcast", buffer.len(), started);
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), CollectiveError> {
        let started = Instant::now();
        let request = self.world.immediate_barrier();
        self.complete(request, "barrier", started);
        self.record("barrier", 0, started);
        Ok(())
    }

    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        let started = Instant::now();
        let mut out = vec![0.0f64; values.len() * self.size];
        mpi::request::scope(|scope| {
            let request = self
                .world
                .immediate_all_gather_into(scope, values, &mut out[..]);
            self.complete(request, "all-gather", started);
        });
        self.record("all-gather", values.len(), started);
        Ok(out)
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
