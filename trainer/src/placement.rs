//! Where a rank runs: its collective and the device it computes on.

use burn::prelude::*;
use mtm_cluster::{Collective, SingleProcess};

use crate::config::DeviceKind;
use crate::error::Result;

/// Where this process sits: its collective (rank, world) and its rank on its node (which
/// GPU it uses).
pub struct Placement {
    /// The collective of the run.
    pub comm: Box<dyn Collective>,
    /// Rank among the processes of this node.
    pub local_rank: usize,
}

impl Placement {
    /// A run of one process.
    pub fn single() -> Self {
        Self {
            comm: Box::new(SingleProcess),
            local_rank: 0,
        }
    }
}

/// The device a rank computes on: the CPU, CUDA GPU `local_rank`, or wgpu's adapter.
pub fn compute_device(kind: DeviceKind, local_rank: usize) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            let device = Device::cuda(local_rank);
            // burn reports a missing driver or NVRTC by panicking on its device thread (the
            // cause is printed there): probe once, so that the run ends with an error that
            // says what to do rather than a second, opaque panic.
            let probe = std::panic::catch_unwind(|| Tensor::<1>::zeros([1], &device).into_data());
            match probe {
                Ok(_) => Ok(device),
                Err(_) => Err(crate::error::TrainError::Config {
                    origin: "distributed.device".into(),
                    message: format!(
                        "CUDA could not start on GPU {local_rank} (the reason is printed above): the NVIDIA driver's libcuda.so and NVRTC must be on the library path (scripts/gpu-check finds them in PyTorch's wheels)"
                    ),
                }),
            }
        }
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => {
            let _ = local_rank;
            Err(crate::error::TrainError::Config {
                origin: "distributed.device".into(),
                message: "`cuda` needs mtm built with `--features cuda` (see the README)".into(),
            })
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(not(feature = "wgpu"))]
        DeviceKind::Wgpu => Err(crate::error::TrainError::Config {
            origin: "distributed.device".into(),
            message: "`wgpu` needs mtm built with `--features wgpu` (see the README)".into(),
        }),
    }
}
