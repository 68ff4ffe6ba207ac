//! The contract every [`Collective`] backend keeps, as one suite run against each (as
//! object_store runs one suite against every store): the in-process thread backend in unit
//! tests, MPI under `mpirun -np 2` (`cluster/tests/mpi_conformance.rs`), NCCL where a GPU
//! is lent. Every rank of a group calls the same function; a broken contract panics with
//! the rank in the message.

use std::time::Duration;

use crate::collective::{
    Collective, CollectiveError, DeviceBuffer, ReduceOp, all_gather_bytes, all_reduce_bucketed,
};

/// Every check below except [`silent_rank_is_named`], in a fixed order.
pub fn run_all(c: &mut dyn Collective) {
    all_reduce_sums_and_means(c);
    bucketed_all_reduce_matches_one_call(c);
    broadcast_copies_the_root(c);
    all_gather_is_in_rank_order(c);
    byte_gather_is_in_rank_order(c);
    barriers_keep_ranks_in_step(c);
    if c.backend() != "nccl" {
        // NCCL reduces only CUDA memory; `mtm bench allreduce --device cuda` runs its
        // device path on a real buffer.
        device_buffers_cross_the_host_once_each_way(c);
    }
}

/// A value every rank can compute for every rank, exact in f32 when summed.
fn value(rank: usize, i: usize) -> f32 {
    ((rank + 1) * (i % 7 + 1)) as f32
}

/// Sum and mean over odd lengths (1, 7, 1001), and an empty buffer.
pub fn all_reduce_sums_and_means(c: &mut dyn Collective) {
    let (rank, n) = (c.rank(), c.world_size());
    for len in [1usize, 7, 1001, 0] {
        for op in [ReduceOp::Sum, ReduceOp::Mean] {
            let mut buffer: Vec<f32> = (0..len).map(|i| value(rank, i)).collect();
            c.all_reduce(&mut buffer, op)
                .unwrap_or_else(|e| panic!("rank {rank}: all-reduce of {len}: {e}"));
            for (i, got) in buffer.iter().enumerate() {
                let sum: f32 = (0..n).map(|r| value(r, i)).sum();
                let want = if op == ReduceOp::Mean {
                    sum / n as f32
                } else {
                    sum
                };
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "rank {rank}: {op:?} of length {len}, element {i}: {got} != {want}"
                );
            }
        }
    }
}

/// Buckets of 64 give exactly what one call over the whole buffer gives.
pub fn bucketed_all_reduce_matches_one_call(c: &mut dyn Collective) {
    let rank = c.rank();
    let make = || {
        (0..1000)
            .map(|i| value(rank, i) * 0.5)
            .collect::<Vec<f32>>()
    };
    let (mut bucketed, mut whole) = (make(), make());
    all_reduce_bucketed(c, &mut bucketed, 64, ReduceOp::Sum)
        .unwrap_or_else(|e| panic!("rank {rank}: bucketed all-reduce: {e}"));
    c.all_reduce(&mut whole, ReduceOp::Sum)
        .unwrap_or_else(|e| panic!("rank {rank}: all-reduce: {e}"));
    assert_eq!(bucketed, whole, "rank {rank}: buckets change the result");
}

/// A [`DeviceBuffer`] in host memory that counts the copies a collective asks of it (it
/// has no CUDA address).
#[derive(Debug)]
pub struct CountingBuffer {
    /// The floats.
    pub values: Vec<f32>,
    /// Copies out ([`DeviceBuffer::read`]).
    pub reads: usize,
    /// Copies in ([`DeviceBuffer::write`]).
    pub writes: usize,
}

impl DeviceBuffer for CountingBuffer {
    fn len(&self) -> usize {
        self.values.len()
    }
    fn read(&mut self, host: &mut [f32]) -> Result<(), String> {
        self.reads += 1;
        host.copy_from_slice(&self.values);
        Ok(())
    }
    fn write(&mut self, host: &[f32]) -> Result<(), String> {
        self.writes += 1;
        self.values.copy_from_slice(host);
        Ok(())
    }
    fn on_cuda(
        &mut self,
        _reduce: &mut dyn FnMut(u64) -> Result<(), CollectiveError>,
    ) -> Result<Option<Result<(), CollectiveError>>, String> {
        Ok(None)
    }
}

/// A device buffer reduces to what a host buffer does, in buckets, and a collective over
/// host memory copies it out once and back once per call, whatever the bucket count
/// (nothing at all with one rank), on every call.
pub fn device_buffers_cross_the_host_once_each_way(c: &mut dyn Collective) {
    let rank = c.rank();
    let copies = usize::from(c.world_size() > 1);
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        let mut host: Vec<f32> = (0..1000).map(|i| value(rank, i)).collect();
        all_reduce_bucketed(c, &mut host, 64, op)
            .unwrap_or_else(|e| panic!("rank {rank}: bucketed all-reduce: {e}"));
        for call in 0..3 {
            let mut device = CountingBuffer {
                values: (0..1000).map(|i| value(rank, i)).collect(),
                reads: 0,
                writes: 0,
            };
            c.all_reduce_device(&mut device, 64, op)
                .unwrap_or_else(|e| panic!("rank {rank}: device all-reduce: {e}"));
            assert_eq!(
                (device.reads, device.writes),
                (copies, copies),
                "rank {rank}: copies of a device buffer in {op:?} all-reduce #{call}"
            );
            assert_eq!(
                device.values, host,
                "rank {rank}: device {op:?} != host {op:?}"
            );
        }
    }
}

/// Every rank ends with the root's bytes, for every root.
pub fn broadcast_copies_the_root(c: &mut dyn Collective) {
    let (rank, n) = (c.rank(), c.world_size());
    for root in 0..n {
        let mut buffer: Vec<u8> = (0..13).map(|i| (rank * 31 + i) as u8).collect();
        c.broadcast(&mut buffer, root)
            .unwrap_or_else(|e| panic!("rank {rank}: broadcast from {root}: {e}"));
        let want: Vec<u8> = (0..13).map(|i| (root * 31 + i) as u8).collect();
        assert_eq!(buffer, want, "rank {rank}: broadcast from root {root}");
    }
}

/// Every rank's values, rank after rank, exactly (f64).
pub fn all_gather_is_in_rank_order(c: &mut dyn Collective) {
    let (rank, n) = (c.rank(), c.world_size());
    let mine = [rank as f64, rank as f64 * 10.0 + 0.125];
    let got = c
        .all_gather(&mine)
        .unwrap_or_else(|e| panic!("rank {rank}: all-gather: {e}"));
    let want: Vec<f64> = (0..n)
        .flat_map(|r| [r as f64, r as f64 * 10.0 + 0.125])
        .collect();
    assert_eq!(got, want, "rank {rank}: all-gather");
}

/// Every rank's bytes, rank after rank, with a different length per rank (one rank
/// sends none).
pub fn byte_gather_is_in_rank_order(c: &mut dyn Collective) {
    let (rank, n) = (c.rank(), c.world_size());
    let bytes_of = |r: usize| -> Vec<u8> { (0..r * 1000).map(|i| (r * 7 + i) as u8).collect() };
    let got = all_gather_bytes(c, &bytes_of(rank))
        .unwrap_or_else(|e| panic!("rank {rank}: byte gather: {e}"));
    let want: Vec<Vec<u8>> = (0..n).map(bytes_of).collect();
    assert!(
        got == want,
        "rank {rank}: byte gather out of order or altered"
    );
}

/// After each of several barriers, every rank reports the same barrier count: no rank
/// runs ahead of the others.
pub fn barriers_keep_ranks_in_step(c: &mut dyn Collective) {
    let rank = c.rank();
    for k in 0..5 {
        c.barrier()
            .unwrap_or_else(|e| panic!("rank {rank}: barrier {k}: {e}"));
        let counts = c
            .all_gather(&[k as f64])
            .unwrap_or_else(|e| panic!("rank {rank}: all-gather after barrier {k}: {e}"));
        assert!(
            counts.iter().all(|&x| x == k as f64),
            "rank {rank}: {counts:?}"
        );
    }
}

/// For backends that can return from a timed-out collective (not MPI or NCCL, which end
/// the process after naming the lost ranks): rank `silent` skips an all-reduce, and every
/// other rank's error names it, with this rank, the step and the sequence number.
pub fn silent_rank_is_named(c: &mut dyn Collective, silent: usize) {
    let rank = c.rank();
    c.set_step(42);
    if rank == silent {
        // Outlive the others' timeout without taking part.
        std::thread::sleep(Duration::from_millis(50));
        return;
    }
    let mut buffer = vec![1.0f32; 5];
    match c.all_reduce(&mut buffer, ReduceOp::Sum) {
        Err(CollectiveError::Timeout {
            rank: r,
            step,
            lost,
            ..
        }) => {
            assert_eq!((r, step), (rank, 42));
            assert_eq!(lost, vec![silent], "rank {rank}");
        }
        other => panic!("rank {rank}: expected a timeout naming rank {silent}, got {other:?}"),
    }
}
