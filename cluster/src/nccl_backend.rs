//! Gradient all-reduce over NCCL between GPUs, one GPU per local rank (`nccl` feature).
//!
//! The gradients never leave the GPU: [`Collective::all_reduce_device`] takes the
//! trainer's flat buffer by its CUDA address and reduces it in place, bucket by bucket,
//! on this backend's own stream; nothing is allocated per step. Everything small (the
//! per-step statistics, broadcasts, barriers, metric gathers, and [`Collective::all_reduce`]
//! over host slices) goes over the host collective instead: MPI between ranks, nothing
//! with one rank. With one rank NCCL still runs (a communicator of one), so that a single
//! GPU measures the path a cluster run takes. The NCCL unique id travels over MPI. The
//! wait is polled against the timeout; on timeout MPI names the lost ranks and the
//! process ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut, DeviceSlice, SyncOnDrop};
use cudarc::nccl::safe::{Comm, Id, ReduceOp as NcclOp};

use crate::collective::{
    Collective, CollectiveError, CollectiveLog, DeviceBuffer, LoggedCollective, ReduceOp,
    SingleProcess,
};

/// The collective that carries everything except the device all-reduce.
enum Host {
    /// One rank: nothing to exchange.
    Alone(SingleProcess),
    /// Ranks of an MPI world.
    #[cfg(feature = "mpi")]
    Mpi(crate::MpiCollective),
}

impl Host {
    fn get(&mut self) -> &mut dyn Collective {
        match self {
            Host::Alone(single) => single,
            #[cfg(feature = "mpi")]
            Host::Mpi(mpi) => mpi,
        }
    }

    fn rank(&self) -> usize {
        match self {
            Host::Alone(single) => single.rank(),
            #[cfg(feature = "mpi")]
            Host::Mpi(mpi) => mpi.rank(),
        }
    }

    fn world_size(&self) -> usize {
        match self {
            Host::Alone(single) => single.world_size(),
            #[cfg(feature = "mpi")]
            Host::Mpi(mpi) => mpi.world_size(),
        }
    }
}

/// NCCL for the gradient all-reduce, the host collective for the rest.
pub struct NcclCollective {
    host: Host,
    comm: Comm,
    stream: Arc<CudaStream>,
    timeout: Duration,
    step: u64,
    seq: u64,
    log: CollectiveLog,
}

/// A bucket of the trainer's buffer as cudarc's NCCL calls take it: borrowed memory, which
/// this backend neither allocates nor frees. The owner finished writing it before handing
/// out the address, and this backend synchronises its stream before returning, so no
/// event is recorded.
struct Borrowed<'a> {
    address: CUdeviceptr,
    len: usize,
    stream: &'a Arc<CudaStream>,
}

impl DeviceSlice<f32> for Borrowed<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.stream
    }
}

impl DevicePtrMut<f32> for Borrowed<'_> {
    fn device_ptr_mut<'b>(&'b mut self, _stream: &'b CudaStream) -> (CUdeviceptr, SyncOnDrop<'b>) {
        (self.address, SyncOnDrop::Sync(None))
    }
}

fn init_error(message: String) -> CollectiveError {
    CollectiveError::Init {
        backend: "nccl",
        message,
    }
}

impl NcclCollective {
    /// One GPU alone: a communicator of one rank on GPU `local_rank` (the single-GPU path
    /// of `mtm bench allreduce`, and of a run that wants NCCL's timing at world size 1).
    pub fn alone(local_rank: usize, timeout: Duration) -> Result<Self, CollectiveError> {
        Self::join(Host::Alone(SingleProcess), local_rank, timeout)
    }

    /// Opens GPU `local_rank` and joins the NCCL communicator of every MPI rank.
    #[cfg(feature = "mpi")]
    pub fn init(mpi: crate::MpiCollective, local_rank: usize) -> Result<Self, CollectiveError> {
        let timeout = mpi.timeout();
        Self::join(Host::Mpi(mpi), local_rank, timeout)
    }

    fn join(mut host: Host, local_rank: usize, timeout: Duration) -> Result<Self, CollectiveError> {
        let (rank, world) = (host.rank(), host.world_size());
        let ctx = CudaContext::new(local_rank).map_err(|e| {
            init_error(format!(
                "rank {rank}: cannot open GPU {local_rank}: {e:?} (is the NVIDIA driver's libcuda.so on the library path?)"
            ))
        })?;
        // A stream of its own: the reduction orders itself after the trainer's kernels by
        // the synchronisation the buffer does before handing out its address.
        let stream = ctx
            .new_stream()
            .map_err(|e| init_error(format!("rank {rank}: creating a stream: {e:?}")))?;
        let mut bytes = [0u8; 128];
        if rank == 0 {
            let id = Id::new().map_err(|e| {
                init_error(format!(
                    "creating the unique id: {e:?} (is libnccl.so on the library path?)"
                ))
            })?;
            for (b, &c) in bytes.iter_mut().zip(id.internal()) {
                *b = c as u8;
            }
        }
        host.get().broadcast(&mut bytes, 0)?;
        let id = Id::uninit(bytes.map(|b| b as core::ffi::c_char));
        let comm = Comm::from_rank(stream.clone(), rank, world, id)
            .map_err(|e| init_error(format!("rank {rank}: joining the communicator: {e:?}")))?;
        Ok(Self {
            host,
            comm,
            stream,
            timeout,
            step: 0,
            seq: 0,
            log: CollectiveLog::default(),
        })
    }

    fn backend_error(&self, message: impl std::fmt::Debug) -> CollectiveError {
        CollectiveError::Backend {
            rank: self.host.rank(),
            step: self.step,
            seq: self.seq,
            op: "nccl all-reduce",
            message: format!("{message:?}"),
        }
    }

    /// Waits for the stream's work, polled against the timeout.
    fn wait(&self, started: Instant) -> Result<(), CollectiveError> {
        let done = self
            .stream
            .record_event(None)
            .map_err(|e| self.backend_error(e))?;
        while !done.try_is_complete().map_err(|e| self.backend_error(e))? {
            if started.elapsed() > self.timeout {
                match &self.host {
                    #[cfg(feature = "mpi")]
                    Host::Mpi(mpi) => {
                        mpi.give_up("nccl all-reduce", self.seq, self.step, &self.log)
                    }
                    Host::Alone(_) => {
                        return Err(CollectiveError::Timeout {
                            rank: 0,
                            step: self.step,
                            seq: self.seq,
                            op: "nccl all-reduce",
                            timeout: self.timeout,
                            lost: vec![],
                            recent: self.log.clone(),
                        });
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        self.stream.synchronize().map_err(|e| self.backend_error(e))
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn world_size(&self) -> usize {
        self.host.world_size()
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn set_step(&mut self, step: u64) {
        self.step = step;
        self.host.get().set_step(step);
    }
    /// Host slices are the small statistics: they go over the host collective.
    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        self.host.get().all_reduce(buffer, op)
    }
    fn broadcast(&mut self, buffer: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.host.get().broadcast(buffer, root)
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.host.get().barrier()
    }
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        self.host.get().all_gather(values)
    }
    fn all_reduce_device(
        &mut self,
        buffer: &mut dyn DeviceBuffer,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        let started = Instant::now();
        let (rank, step) = (self.host.rank(), self.step);
        let len = buffer.len();
        let nccl_op = match op {
            ReduceOp::Sum => NcclOp::Sum,
            ReduceOp::Mean => NcclOp::Avg,
        };
        let bucket = bucket_elems.max(1);
        let mut reduce = |address: u64| -> Result<(), CollectiveError> {
            let mut offset = 0;
            while offset < len {
                let n = bucket.min(len - offset);
                let mut part = Borrowed {
                    address: address + (offset * std::mem::size_of::<f32>()) as CUdeviceptr,
                    len: n,
                    stream: &self.stream,
                };
                self.comm
                    .all_reduce_in_place(&mut part, &nccl_op)
                    .map_err(|e| self.backend_error(e))?;
                offset += n;
            }
            self.wait(started)
        };
        let located = |message| CollectiveError::DeviceBuffer {
            rank,
            step,
            what: "located",
            message,
        };
        match buffer.on_cuda(&mut reduce).map_err(located)? {
            Some(reduced) => reduced?,
            None => {
                return Err(located(
                    "NCCL needs the gradients in CUDA memory (distributed.device = \"cuda\")"
                        .into(),
                ));
            }
        }
        self.log.push(LoggedCollective {
            seq: self.seq,
            op: "nccl all-reduce",
            len,
            step: self.step,
            took: started.elapsed(),
        });
        self.seq += 1;
        Ok(())
    }
}
