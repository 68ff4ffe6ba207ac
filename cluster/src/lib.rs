//! The cluster layer of mtm: the only crate that knows about launchers, MPI and NCCL.
//!
//! It answers two questions for the rest of the workspace: which rank of how many is this
//! process ([`Topology`], read from the launcher's environment), and how do processes
//! combine their numbers ([`Collective`]: single process, MPI, or NCCL behind the `nccl`
//! feature). Every collective has a timeout; a rank that stops answering is named.
//! [`connect`] picks the collective for this process's place in the run, so that no other
//! crate decides between them. [`slurm`] holds what a Slurm job asks for, its batch
//! script, and the allocation check.
//!
//! MPI is the `mpi` feature and NCCL the `nccl` feature: a single-process build needs no
//! MPI library (one GPU with NCCL included), and a binary built without MPI refuses to
//! start as one rank of many. Between GPU ranks NCCL bootstraps over MPI, so a multi-GPU
//! run needs both.

pub mod collective;
pub mod conformance;
mod connect;
#[cfg(feature = "mpi")]
pub mod mpi_backend;
#[cfg(feature = "nccl")]
pub mod nccl_backend;
pub mod slurm;
pub mod threads;

pub use collective::{
    Collective, CollectiveError, CollectiveLog, DeviceBuffer, HostStaging, ReduceOp, SingleProcess,
    all_gather_bytes, all_reduce_bucketed,
};
pub use connect::{
    AllreduceTimes, Fabric, bench_allreduce, connect, gpu_alone, mpi_library_version,
};
#[cfg(feature = "mpi")]
pub use mpi_backend::MpiCollective;
#[cfg(feature = "nccl")]
pub use nccl_backend::NcclCollective;
pub use threads::ThreadCollective;

use serde::Serialize;

/// Where this process sits in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the run.
    pub world_size: usize,
    /// Rank among the processes of this node.
    pub local_rank: usize,
    /// Processes on this node.
    pub local_size: usize,
    /// Index of this node.
    pub node: usize,
    /// Which launcher the values came from.
    pub source: Launcher,
}

/// The launcher whose environment described the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Launcher {
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// A PMI launcher (`PMI_RANK`, `PMI_SIZE`).
    Pmi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`, …).
    Slurm,
    /// No launcher: a single process.
    Single,
}

/// A launcher environment that does not describe a valid run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    /// A variable is set but not a number.
    #[error("environment variable {name}={value:?} is not a non-negative integer")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The values contradict each other.
    #[error("inconsistent {launcher:?} topology: {reason}")]
    Inconsistent {
        /// Where the values came from.
        launcher: Launcher,
        /// What contradicts what.
        reason: String,
    },
}

impl Topology {
    /// A single process.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_size: 1,
            node: 0,
            source: Launcher::Single,
        }
    }

    /// Reads the topology from this process's environment.
    pub fn from_env() -> Result<Self, TopologyError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the topology from `var`, in order Open MPI, PMI, Slurm, else a single process.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TopologyError> {
        let num = |name: &'static str| -> Result<Option<usize>, TopologyError> {
            var(name)
                .map(|value| {
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| TopologyError::NotANumber { name, value })
                })
                .transpose()
        };
        // Launchers that name rank, size and node-local rank and size; nodes are filled in
        // order (Open MPI's default `--map-by slot`), so the node is rank / local size.
        let by_locals = |launcher, [rank, size, local_rank, local_size]: [&'static str; 4]| {
            Ok::<_, TopologyError>(match (num(rank)?, num(size)?) {
                (Some(rank), Some(world_size)) => {
                    let local_size = num(local_size)?.unwrap_or(1);
                    Some(Self {
                        rank,
                        world_size,
                        local_rank: num(local_rank)?.unwrap_or(0),
                        local_size,
                        node: rank / local_size.max(1),
                        source: launcher,
                    })
                }
                _ => None,
            })
        };
        let open_mpi = [
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "OMPI_COMM_WORLD_LOCAL_SIZE",
        ];
        let pmi = ["PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"];
        let topology = if let Some(t) = by_locals(Launcher::OpenMpi, open_mpi)? {
            t
        } else if let Some(t) = by_locals(Launcher::Pmi, pmi)? {
            t
        } else if let (Some(rank), Some(size)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            let nodes = num("SLURM_NNODES")?.unwrap_or(1).max(1);
            // A plain number when every node runs the same count ("2(x3)" otherwise).
            if let Some(per_node) =
                var("SLURM_NTASKS_PER_NODE").and_then(|v| v.parse::<usize>().ok())
                && per_node * nodes != size
            {
                return Err(TopologyError::Inconsistent {
                    launcher: Launcher::Slurm,
                    reason: format!(
                        "SLURM_NTASKS={size} but SLURM_NNODES={nodes} x SLURM_NTASKS_PER_NODE={per_node} = {}",
                        per_node * nodes
                    ),
                });
            }
            Self {
                rank,
                world_size: size,
                local_rank: num("SLURM_LOCALID")?.unwrap_or(0),
                local_size: size.div_ceil(nodes),
                node: num("SLURM_NODEID")?.unwrap_or(0),
                source: Launcher::Slurm,
            }
        } else {
            Self::single()
        };
        topology.validate()?;
        Ok(topology)
    }

    /// Checks that every local rank can have a GPU of its own when `visible` GPUs are
    /// visible to this process (one GPU per local rank, by local rank).
    pub fn check_gpus(&self, visible: usize) -> Result<(), TopologyError> {
        if visible <= self.local_rank {
            return Err(TopologyError::Inconsistent {
                launcher: self.source,
                reason: format!(
                    "local rank {} of {} on node {} needs GPU {} but only {visible} are visible (CUDA_VISIBLE_DEVICES); start at most {visible} processes per node",
                    self.local_rank, self.local_size, self.node, self.local_rank
                ),
            });
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), TopologyError> {
        let bad = |reason: String| {
            Err(TopologyError::Inconsistent {
                launcher: self.source,
                reason,
            })
        };
        if self.world_size == 0 {
            return bad("world size is 0".into());
        }
        if self.rank >= self.world_size {
            return bad(format!(
                "rank {} is not below world size {}",
                self.rank, self.world_size
            ));
        }
        if self.local_size == 0 || self.local_rank >= self.local_size {
            return bad(format!(
                "local rank {} is not below local size {}",
                self.local_rank, self.local_size
            ));
        }
        if self.local_size > self.world_size {
            return bad(format!(
                "{} processes per node but only {} in all",
                self.local_size, self.world_size
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {} of {} (local rank {} of {} on node {}, from {:?})",
            self.rank, self.world_size, self.local_rank, self.local_size, self.node, self.source
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Topology, TopologyError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Topology::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(from(&[]).unwrap(), Topology::single());
    }

    #[test]
    fn open_mpi_comes_first() {
        let t = from(&[
            ("OMPI_COMM_WORLD_RANK", "5"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!(
            (t.rank, t.world_size, t.local_rank, t.node, t.source),
            (5, 8, 1, 1, Launcher::OpenMpi)
        );
    }

    #[test]
    fn slurm_is_read_when_alone() {
        let t = from(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURM_NNODES", "2"),
        ])
        .unwrap();
        assert_eq!(
            (t.rank, t.world_size, t.local_rank, t.local_size, t.node),
            (3, 4, 1, 2, 1)
        );
    }

    #[test]
    fn contradictions_are_explained() {
        let err = from(&[("PMI_RANK", "4"), ("PMI_SIZE", "4")]).unwrap_err();
        assert!(
            err.to_string().contains("rank 4 is not below world size 4"),
            "{err}"
        );
        let err = from(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_NNODES", "2"),
            ("SLURM_NTASKS_PER_NODE", "4"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("2 x SLURM_NTASKS_PER_NODE=4 = 8"),
            "{err}"
        );
        let t = from(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])
        .unwrap();
        assert!(t.check_gpus(2).is_ok());
        let err = t.check_gpus(1).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs GPU 1 but only 1 are visible"),
            "{err}"
        );
        let err = from(&[("SLURM_PROCID", "x"), ("SLURM_NTASKS", "4")]).unwrap_err();
        assert_eq!(
            err,
            TopologyError::NotANumber {
                name: "SLURM_PROCID",
                value: "x".into()
            }
        );
    }
}
