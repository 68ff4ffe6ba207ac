//! The one place that decides which collective a process uses: alone, it needs none; as
//! one rank of many, MPI between CPU ranks or NCCL between GPU ranks, if this binary was
//! built with them.

use std::time::Duration;

use crate::Topology;
use crate::collective::{Collective, CollectiveError, SingleProcess};

/// Where the tensors that ranks combine live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fabric {
    /// Host memory: MPI all-reduce.
    Host,
    /// CUDA GPUs, one per local rank: NCCL all-reduce (bootstrapped over MPI).
    Gpu,
}

/// The collective for this process's place in `topology`. A single process gets
/// [`SingleProcess`] whatever was built in; a rank of many gets MPI ([`Fabric::Host`]) or
/// NCCL ([`Fabric::Gpu`]), after checking that MPI sees the same world as the launcher.
pub fn connect(
    topology: &Topology,
    timeout: Duration,
    fabric: Fabric,
) -> Result<Box<dyn Collective>, CollectiveError> {
    if topology.world_size == 1 {
        return Ok(Box::new(SingleProcess));
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = timeout;
        Err(match fabric {
            Fabric::Host => not_built(topology, "MPI", "mpi"),
            Fabric::Gpu => not_built(topology, "MPI (NCCL's bootstrap between ranks)", "cuda,mpi"),
        })
    }
    #[cfg(feature = "mpi")]
    {
        let mpi = crate::MpiCollective::init(timeout)?;
        if mpi.world_size() != topology.world_size || mpi.rank() != topology.rank {
            return Err(CollectiveError::Init {
                backend: "mpi",
                message: format!(
                    "the launcher says {topology} but MPI says rank {} of {}: start mtm with mpirun (Open MPI) or srun --mpi=pmix, and build it against the same MPI",
                    mpi.rank(),
                    mpi.world_size()
                ),
            });
        }
        match fabric {
            Fabric::Host => Ok(Box::new(mpi)),
            #[cfg(feature = "nccl")]
            Fabric::Gpu => {
                let visible = std::env::var("CUDA_VISIBLE_DEVICES")
                    .ok()
                    .map(|v| v.split(',').filter(|s| !s.trim().is_empty()).count());
                if let Some(visible) = visible {
                    topology
                        .check_gpus(visible)
                        .map_err(|e| CollectiveError::Init {
                            backend: "nccl",
                            message: e.to_string(),
                        })?;
                }
                Ok(Box::new(crate::NcclCollective::init(
                    mpi,
                    topology.local_rank,
                )?))
            }
            #[cfg(not(feature = "nccl"))]
            Fabric::Gpu => Err(not_built(topology, "CUDA and NCCL", "cuda,mpi")),
        }
    }
}

/// An NCCL communicator of one rank on GPU `local_rank`: what `mtm bench step --device
/// cuda` times the gradient all-reduce with on a single GPU (a single-GPU run itself
/// needs no collective, and [`connect`] gives it none).
pub fn gpu_alone(
    local_rank: usize,
    timeout: Duration,
) -> Result<Box<dyn Collective>, CollectiveError> {
    #[cfg(feature = "nccl")]
    {
        Ok(Box::new(crate::NcclCollective::alone(local_rank, timeout)?))
    }
    #[cfg(not(feature = "nccl"))]
    {
        let _ = (local_rank, timeout);
        Err(CollectiveError::Init {
            backend: "nccl",
            message: "this mtm was built without NCCL: rebuild it with `--features cuda`".into(),
        })
    }
}

/// The error of a multi-rank start that needs `what`, built by the binary's `feature`.
#[cfg(not(all(feature = "mpi", feature = "nccl")))]
fn not_built(topology: &Topology, what: &'static str, feature: &'static str) -> CollectiveError {
    CollectiveError::NotBuilt {
        launcher: match topology.source {
            crate::Launcher::OpenMpi => "mpirun (Open MPI)",
            crate::Launcher::Pmi => "a PMI launcher",
            crate::Launcher::Slurm => "srun (Slurm)",
            crate::Launcher::Single => "no launcher",
        }
        .into(),
        rank: topology.rank,
        world: topology.world_size,
        what,
        feature,
    }
}

/// The MPI library's version line, when this binary was built with MPI.
pub fn mpi_library_version() -> Option<String> {
    #[cfg(feature = "mpi")]
    {
        Some(crate::MpiCollective::library_version())
    }
    #[cfg(not(feature = "mpi"))]
    {
        None
    }
}

/// Medians of [`bench_allreduce`], in seconds.
#[derive(Clone, Copy, Debug)]
pub struct AllreduceTimes {
    /// The trainer's path: [`crate::all_reduce_bucketed`] over the MPI collective (copy,
    /// non-blocking all-reduce polled against the timeout, one bucket at a time).
    pub bucketed: f64,
    /// One blocking `MPI_Allreduce` of the whole buffer, without copy or timeout.
    pub raw: f64,
}

/// Times the trainer's bucketed all-reduce of `floats` values against one raw
/// `MPI_Allreduce` of the same bytes, interleaved `repeats` times after one warm-up of
/// each, and checks the bucketed result. Every rank of `topology` must call it.
pub fn bench_allreduce(
    topology: &Topology,
    floats: usize,
    bucket_elems: usize,
    repeats: usize,
) -> Result<AllreduceTimes, CollectiveError> {
    #[cfg(not(feature = "mpi"))]
    {
        let _ = (floats, bucket_elems, repeats);
        Err(not_built(topology, "MPI", "mpi"))
    }
    #[cfg(feature = "mpi")]
    {
        use std::time::Instant;

        use crate::{ReduceOp, all_reduce_bucketed};
        let mut mpi = crate::MpiCollective::init(Duration::from_secs(600))?;
        let (rank, world) = (mpi.rank(), mpi.world_size());
        debug_assert_eq!((rank, world), (topology.rank, topology.world_size));
        let fill = |v: &mut Vec<f32>| {
            v.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = ((i + rank) % 97) as f32 * 0.01);
        };
        let mut buffer = vec![0.0f32; floats];
        let mut recv = vec![0.0f32; floats];
        let mut bucketed = Vec::with_capacity(repeats);
        let mut raw = Vec::with_capacity(repeats);
        // Interleaved, so that both see the same machine state; one warm-up of each first.
        for i in 0..=repeats {
            fill(&mut buffer);
            mpi.barrier()?;
            let t = Instant::now();
            all_reduce_bucketed(&mut mpi, &mut buffer, bucket_elems, ReduceOp::Sum)?;
            let b = t.elapsed().as_secs_f64();
            let expected: f32 = (0..world).map(|r| (r % 97) as f32 * 0.01).sum();
            if (buffer[0] - expected).abs() > 1e-4 * expected.abs().max(1.0) {
                return Err(CollectiveError::Mismatch {
                    rank,
                    step: 0,
                    message: format!("bucketed all-reduce gave {} for {expected}", buffer[0]),
                });
            }
            fill(&mut buffer);
            mpi.barrier()?;
            let t = Instant::now();
            mpi.raw_all_reduce_sum(&buffer, &mut recv);
            let r = t.elapsed().as_secs_f64();
            if i > 0 {
                bucketed.push(b);
                raw.push(r);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Ok(AllreduceTimes {
            bucketed: median(&mut bucketed),
            raw: median(&mut raw),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_needs_no_backend() {
        let comm = connect(&Topology::single(), Duration::from_secs(1), Fabric::Gpu).unwrap();
        assert_eq!((comm.backend(), comm.world_size()), ("single", 1));
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn a_rank_of_many_without_mpi_names_the_feature() {
        let topology = Topology {
            rank: 1,
            world_size: 2,
            local_rank: 1,
            local_size: 2,
            node: 0,
            source: crate::Launcher::OpenMpi,
        };
        let err = connect(&topology, Duration::from_secs(1), Fabric::Host)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("rank 1 of 2") && err.contains("--features mpi"),
            "{err}"
        );
    }
}
