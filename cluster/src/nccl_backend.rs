//! Gradient all-reduce over NCCL between GPUs, one GPU per local rank (`nccl` feature).
//!
//! MPI starts the run: rank 0 creates the NCCL unique id and broadcasts its 128 bytes over
//! MPI, and the small collectives (broadcast, barrier, metrics all-gather) stay on MPI.
//! The all-reduce copies the host buffer to the GPU, reduces it there with NCCL and copies
//! it back: the trainer's gradient buffer is a host buffer on every backend. The wait is
//! polled against the timeout; on timeout MPI names the lost ranks and the process ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp as NcclOp};

use crate::collective::{Collective, CollectiveError, CollectiveLog, LoggedCollective, ReduceOp};
use crate::mpi_backend::MpiCollective;

/// NCCL for the all-reduce, MPI for the rest.
pub struct NcclCollective {
    mpi: MpiCollective,
    comm: Comm,
    stream: Arc<CudaStream>,
    device_buffer: Option<CudaSlice<f32>>,
    step: u64,
    seq: u64,
    log: CollectiveLog,
}

fn backend_error(rank: usize, op: &'static str, message: impl std::fmt::Debug) -> CollectiveError {
    CollectiveError::Backend {
        rank,
        step: 0,
        seq: 0,
        op,
        message: format!("{message:?}"),
    }
}

impl NcclCollective {
    /// Opens GPU `local_rank` and joins the NCCL communicator of every MPI rank.
    pub fn init(mut mpi: MpiCollective, local_rank: usize) -> Result<Self, CollectiveError> {
        let rank = mpi.rank();
        let ctx = CudaContext::new(local_rank).map_err(|e| CollectiveError::Init {
            backend: "nccl",
            message: format!("rank {rank}: cannot open GPU {local_rank}: {e:?}"),
        })?;
        let stream = ctx.default_stream();
        let mut bytes = [0u8; 128];
        if rank == 0 {
            let id = Id::new().map_err(|e| CollectiveError::Init {
                backend: "nccl",
                message: format!("creating the unique id: {e:?}"),
            })?;
            for (b, &c) in bytes.iter_mut().zip(id.internal()) {
                *b = c as u8;
            }
        }
        mpi.broadcast(&mut bytes, 0)?;
        let id = Id::uninit(bytes.map(|b| b as core::ffi::c_char));
        let comm = Comm::from_rank(stream.clone(), rank, mpi.world_size(), id).map_err(|e| {
            CollectiveError::Init {
                backend: "nccl",
                message: format!("rank {rank}: joining the communicator: {e:?}"),
            }
        })?;
        Ok(Self {
            mpi,
            comm,
            stream,
            device_buffer: None,
            step: 0,
            seq: 0,
            log: CollectiveLog::default(),
        })
    }

    fn reduce_on_gpu(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        let rank = self.mpi.rank();
        let started = Instant::now();
        if self
            .device_buffer
            .as_ref()
            .is_none_or(|b| b.len() != buffer.len())
        {
            self.device_buffer = Some(
                self.stream
                    .alloc_zeros::<f32>(buffer.len())
                    .map_err(|e| backend_error(rank, "all-reduce", e))?,
            );
        }
        let device = self.device_buffer.as_mut().expect("allocated above");
        self.stream
            .memcpy_htod(buffer, device)
            .map_err(|e| backend_error(rank, "all-reduce", e))?;
        let nccl_op = match op {
            ReduceOp::Sum => NcclOp::Sum,
            ReduceOp::Mean => NcclOp::Avg,
        };
        self.comm
            .all_reduce_in_place(device, &nccl_op)
            .map_err(|e| backend_error(rank, "all-reduce", e))?;
        let done = self
            .stream
            .record_event(None)
            .map_err(|e| backend_error(rank, "all-reduce", e))?;
        let timeout = self.mpi.timeout();
        while !done
            .try_is_complete()
            .map_err(|e| backend_error(rank, "all-reduce", e))?
        {
            if started.elapsed() > timeout {
                self.mpi
                    .give_up("nccl all-reduce", self.seq, self.step, &self.log);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        self.stream
            .memcpy_dtoh(device, buffer)
            .map_err(|e| backend_error(rank, "all-reduce", e))?;
        self.stream
            .synchronize()
            .map_err(|e| backend_error(rank, "all-reduce", e))?;
        self.log.push(LoggedCollective {
            seq: self.seq,
            op: "nccl all-reduce",
            len: buffer.len(),
            step: self.step,
            took: started.elapsed(),
        });
        self.seq += 1;
        Ok(())
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn set_step(&mut self, step: u64) {
        self.step = step;
        self.mpi.set_step(step);
    }
    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        let (rank, step, seq) = (self.mpi.rank(), self.step, self.seq);
        self.reduce_on_gpu(buffer, op).map_err(|e| match e {
            CollectiveError::Backend { op, message, .. } => CollectiveError::Backend {
                rank,
                step,
                seq,
                op,
                message,
            },
            other => other,
        })
    }
    fn broadcast(&mut self, buffer: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.mpi.broadcast(buffer, root)
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.mpi.barrier()
    }
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        self.mpi.all_gather(values)
    }
}
