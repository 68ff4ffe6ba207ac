//! The CUDA address of a tensor's memory, so that NCCL can reduce the gradient buffer in
//! place (`cuda` feature).
//!
//! burn 0.22 has no public call for this; its backend-extension API gets there: the
//! tensor's cubecl primitive, then the storage resource behind its handle, which carries
//! the device pointer and, while held, keeps the allocation where it is. cubecl computes
//! on a stream of its own per thread, so the device is synchronised from this (the
//! training) thread before the pointer is handed out.

use burn::cubecl::__private::Runtime;
use burn::cubecl::cuda::CudaRuntime;
use burn::cubecl::server::ServerError;
use burn::prelude::*;
use mtm_cluster::CollectiveError;

/// Calls `reduce` with the address of `flat`'s first float; `Ok(None)` when `flat` is not
/// in CUDA memory (a wgpu tensor shares burn's cubecl backend type, so the runtime that
/// serves it decides).
pub(crate) fn with_address(
    flat: &Tensor<1>,
    reduce: &mut dyn FnMut(u64) -> Result<(), CollectiveError>,
) -> Result<Option<Result<(), CollectiveError>>, String> {
    let device = flat.device();
    let Ok(primitive) = flat.clone().try_into_primitive::<burn::backend::Cuda>() else {
        return Ok(None);
    };
    let resource = match primitive
        .client
        .get_resource::<<CudaRuntime as Runtime>::Server>(primitive.handle.clone())
    {
        Ok(resource) => resource,
        Err(ServerError::ServiceMismatch { .. }) => return Ok(None),
        Err(e) => return Err(format!("{e:?}")),
    };
    // Every kernel that wrote the buffer (the backward pass, the additions, the scaling)
    // was queued on this thread's stream: wait for them before NCCL reads it.
    device
        .sync()
        .map_err(|e| format!("waiting for the device: {e:?}"))?;
    let result = reduce(resource.resource().ptr);
    drop(resource);
    Ok(Some(result))
}
