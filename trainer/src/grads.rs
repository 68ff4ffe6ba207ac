//! Gradients as one flat f32 buffer in a fixed parameter order, kept where the model
//! computes.
//!
//! Accumulation over micro-batches, the global-norm clip and the finiteness check work on
//! this buffer, and it is what a data-parallel run all-reduces: its layout depends on the
//! model's structure alone, so it is identical on every rank whichever sessions a rank's
//! batches came from. A parameter no micro-batch touched (the stitcher of a session not in
//! the batch) is left out of the optimizer step, as PyTorch skips a parameter whose
//! gradient is `None`.
//!
//! On the CPU the buffer is host memory ([`Residence::Host`]). On a GPU backend it is one
//! tensor on the device ([`Residence::Device`]): the backward pass's gradients are added
//! into it there, the norm, clip and finiteness check run there (one scalar comes back
//! for each), the collective reduces it through [`DeviceBuffer`] (in place with NCCL; with
//! MPI through the host, one read and one write per step), and the optimizer gets views
//! of it. [`FlatGrads::transfers`] counts every gradient byte that crosses between host and
//! device, so tests and the metrics can prove where the gradients went.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use mtm_cluster::{Collective, CollectiveError, DeviceBuffer, ReduceOp, all_reduce_bucketed};

/// Where the buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residence {
    /// Host memory: the CPU backend, whose tensors are host memory already.
    Host,
    /// One tensor on the model's device (GPU backends).
    Device,
}

/// One parameter's place in the buffer.
#[derive(Clone, Debug)]
struct Slot {
    id: ParamId,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

/// Gradient bytes moved between host and device since the buffer was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Device-to-host bytes.
    pub to_host: u64,
    /// Host-to-device bytes.
    pub to_device: u64,
}

/// The buffer on a device: the flat tensor, and per parameter the sum of this step's
/// gradients until they are written into it.
#[derive(Debug)]
struct OnDevice {
    /// The flat buffer, once a step's gradients are in it (taken while it is reduced).
    flat: Option<Tensor<1>>,
    /// Per slot, this step's accumulated gradient (flattened), not yet in `flat`.
    pending: Vec<Option<Tensor<1>>>,
    /// Per slot, whether `flat` holds a non-zero value from an earlier step.
    stale: Vec<bool>,
    /// Zeros as long as the longest slot, for clearing stale slots without allocating.
    zeros: Option<Tensor<1>>,
    /// Whether `pending` or a clear has not reached `flat` yet.
    unsettled: bool,
    moved: Transfers,
}

#[derive(Debug)]
enum Storage {
    Host(Vec<f32>),
    Device(Box<OnDevice>),
}

/// A flat gradient buffer for one model.
#[derive(Debug)]
pub struct FlatGrads {
    slots: Vec<Slot>,
    total: usize,
    /// Whether each parameter received a gradient since the last [`FlatGrads::clear`].
    pub touched: Vec<bool>,
    storage: Storage,
}

struct Layout<'a>(&'a mut Vec<Slot>, usize);

impl ModuleVisitor for Layout<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.shape().dims::<D>().to_vec();
        let len = shape.iter().product();
        self.0.push(Slot {
            id: param.id,
            shape,
            offset: self.1,
            len,
        });
        self.1 += len;
    }
}

struct AddFrom<'a> {
    grads: &'a GradientsParams,
    flat: &'a mut FlatGrads,
    index: usize,
}

impl ModuleVisitor for AddFrom<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let index = self.index;
        self.index += 1;
        let slot = &self.flat.slots[index];
        debug_assert_eq!(slot.id, param.id);
        let Some(grad) = self.grads.get::<D>(param.id) else {
            return;
        };
        self.flat.touched[index] = true;
        match &mut self.flat.storage {
            Storage::Host(values) => {
                let grad = grad
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("gradients are f32");
                for (acc, g) in values[slot.offset..slot.offset + slot.len]
                    .iter_mut()
                    .zip(grad)
                {
                    *acc += g;
                }
            }
            Storage::Device(on) => {
                debug_assert!(
                    on.unsettled,
                    "gradients added after the step's buffer was settled, without a clear"
                );
                on.unsettled = true;
                let grad = grad.reshape([slot.len]);
                // In place when the sum is the only owner of its buffer (burn reuses it).
                on.pending[index] = Some(match on.pending[index].take() {
                    Some(sum) => sum + grad,
                    None => grad,
                });
            }
        }
    }
}

impl FlatGrads {
    /// An all-zero buffer laid out for `model`, in host memory.
    pub fn new<M: Module>(model: &M) -> Self {
        Self::with_residence(model, Residence::Host)
    }

    /// An all-zero buffer laid out for `model`, kept where `residence` says.
    pub fn with_residence<M: Module>(model: &M, residence: Residence) -> Self {
        let mut slots = Vec::new();
        let mut layout = Layout(&mut slots, 0);
        model.visit(&mut layout);
        let total = layout.1;
        let n = slots.len();
        let storage = match residence {
            Residence::Host => Storage::Host(vec![0.0; total]),
            Residence::Device => Storage::Device(Box::new(OnDevice {
                flat: None,
                pending: vec![None; n],
                stale: vec![false; n],
                zeros: None,
                unsettled: false,
                moved: Transfers::default(),
            })),
        };
        Self {
            slots,
            total,
            touched: vec![false; n],
            storage,
        }
    }

    /// Where the buffer lives.
    pub fn residence(&self) -> Residence {
        match self.storage {
            Storage::Host(_) => Residence::Host,
            Storage::Device(_) => Residence::Device,
        }
    }

    /// Parameters in the layout.
    pub fn n_params(&self) -> usize {
        self.slots.len()
    }

    /// Floats in the buffer (the model's parameter count).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the model has no parameters.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Gradient bytes moved between host and device so far (always zero in host memory).
    pub fn transfers(&self) -> Transfers {
        match &self.storage {
            Storage::Host(_) => Transfers::default(),
            Storage::Device(on) => on.moved,
        }
    }

    /// Zeroes the buffer for the next step.
    pub fn clear(&mut self) {
        match &mut self.storage {
            Storage::Host(values) => values.iter_mut().for_each(|v| *v = 0.0),
            Storage::Device(on) => {
                // The flat tensor is cleared lazily: each slot is overwritten by its next
                // gradient, or by zeros when it goes a step without one (see `settle`).
                on.pending.iter_mut().for_each(|p| *p = None);
                on.unsettled = true;
            }
        }
        self.touched.iter_mut().for_each(|t| *t = false);
    }

    /// Adds one backward pass's gradients of `model`.
    pub fn add<M: Module>(&mut self, model: &M, grads: &GradientsParams) {
        let mut visitor = AddFrom {
            grads,
            flat: self,
            index: 0,
        };
        model.visit(&mut visitor);
    }

    /// Writes the step's pending gradients into the device buffer, and zeros into the
    /// slots that had a value from an earlier step and none in this one. Each write is a
    /// `slice_assign` into the buffer, which burn does in place since the buffer has one
    /// owner; the buffer itself is allocated once, on the first step.
    fn settle(&mut self) {
        let Storage::Device(on) = &mut self.storage else {
            return;
        };
        if !on.unsettled {
            return;
        }
        on.unsettled = false;
        let device = match on.pending.iter().flatten().next() {
            Some(g) => g.device(),
            None => match &on.flat {
                Some(flat) => flat.device(),
                // No gradient yet and no buffer: nothing to settle.
                None => return,
            },
        };
        let longest = self.slots.iter().map(|s| s.len).max().unwrap_or(0);
        let zeros = on
            .zeros
            .get_or_insert_with(|| Tensor::<1>::zeros([longest], &device))
            .clone();
        let mut flat = on
            .flat
            .take()
            .unwrap_or_else(|| Tensor::<1>::zeros([self.total], &device));
        for (i, slot) in self.slots.iter().enumerate() {
            let range = slot.offset..slot.offset + slot.len;
            match on.pending[i].take() {
                Some(grad) => {
                    flat = flat.slice_assign([range], grad);
                    on.stale[i] = true;
                }
                None if on.stale[i] => {
                    flat = flat.slice_assign([range], zeros.clone().slice_dim(0, 0..slot.len));
                    on.stale[i] = false;
                }
                None => {}
            }
        }
        on.flat = Some(flat);
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f32) {
        self.settle();
        match &mut self.storage {
            Storage::Host(values) => values.iter_mut().for_each(|v| *v *= factor),
            Storage::Device(on) => {
                if let Some(flat) = on.flat.take() {
                    on.flat = Some(flat.mul_scalar(factor));
                }
            }
        }
    }

    /// The global L2 norm (accumulated in f64 on the host, in f32 on a device, as
    /// PyTorch's `clip_grad_norm_` does on a GPU).
    pub fn norm(&mut self) -> f64 {
        self.settle();
        match &self.storage {
            Storage::Host(values) => values
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt(),
            Storage::Device(on) => match &on.flat {
                Some(flat) => f64::from(flat.clone().square().sum().into_scalar::<f32>()).sqrt(),
                None => 0.0,
            },
        }
    }

    /// Whether every gradient is finite. On a device this reads one flag, not the buffer.
    pub fn is_finite(&mut self) -> bool {
        self.settle();
        match &self.storage {
            Storage::Host(values) => values.iter().all(|v| v.is_finite()),
            Storage::Device(on) => match &on.flat {
                Some(flat) => flat.clone().is_finite().all().into_scalar::<bool>(),
                None => true,
            },
        }
    }

    /// Scales the gradients so that their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is below 1). Returns the
    /// norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> f64 {
        let norm = self.norm();
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            self.scale(factor as f32);
        }
        norm
    }

    /// Combines the buffer across the ranks of `comm` in buckets of `bucket_elems`: over
    /// host memory directly, on a device through [`Collective::all_reduce_device`].
    pub fn all_reduce(
        &mut self,
        comm: &mut dyn Collective,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        // Also with one rank: NCCL then still runs (a communicator of one, as
        // `mtm bench step --device cuda` times it); every other collective returns at once.
        self.settle();
        let total = self.total;
        match &mut self.storage {
            Storage::Host(values) => all_reduce_bucketed(comm, values, bucket_elems, op),
            Storage::Device(on) => {
                let device = on.flat.as_ref().map(Tensor::device);
                let mut view = DeviceFlat {
                    flat: on.flat.take(),
                    len: total,
                    device,
                    moved: &mut on.moved,
                };
                let result = comm.all_reduce_device(&mut view, bucket_elems, op);
                on.flat = view.flat;
                // A slot some rank touched may now hold values here too.
                on.stale.clone_from(&self.touched);
                result
            }
        }
    }

    /// The gradients of the touched parameters as burn's containers for `optim.step`: on a
    /// device, views of the buffer (no copy where the slot is aligned). The parameters in
    /// `own` go into the second container (stepped at their own rate, see
    /// [`crate::optim::step`]), every other one into the first.
    pub fn to_params(
        &mut self,
        device: &Device,
        own: &[ParamId],
    ) -> (GradientsParams, GradientsParams) {
        self.settle();
        let (mut shared, mut separate) = (GradientsParams::new(), GradientsParams::new());
        let touched = self
            .slots
            .iter()
            .zip(&self.touched)
            .filter(|(_, t)| **t)
            .map(|(s, _)| s);
        for slot in touched {
            let flat = match &self.storage {
                Storage::Host(values) => Tensor::<1>::from_data(
                    TensorData::new(
                        values[slot.offset..slot.offset + slot.len].to_vec(),
                        [slot.len],
                    ),
                    device,
                ),
                Storage::Device(on) => on
                    .flat
                    .as_ref()
                    .expect("a touched slot has been settled into the buffer")
                    .clone()
                    .slice_dim(0, slot.offset..slot.offset + slot.len),
            };
            let out = if own.contains(&slot.id) {
                &mut separate
            } else {
                &mut shared
            };
            match slot.shape.len() {
                1 => out.register(slot.id, flat),
                2 => out.register(slot.id, flat.reshape([slot.shape[0], slot.shape[1]])),
                3 => out.register(
                    slot.id,
                    flat.reshape([slot.shape[0], slot.shape[1], slot.shape[2]]),
                ),
                4 => out.register(
                    slot.id,
                    flat.reshape([slot.shape[0], slot.shape[1], slot.shape[2], slot.shape[3]]),
                ),
                rank => unreachable!("NDT1 has no parameter of rank {rank}"),
            }
        }
        (shared, separate)
    }
}

/// The device buffer as a collective sees it, for the length of one all-reduce.
struct DeviceFlat<'a> {
    flat: Option<Tensor<1>>,
    len: usize,
    device: Option<Device>,
    moved: &'a mut Transfers,
}

impl DeviceBuffer for DeviceFlat<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&mut self, host: &mut [f32]) -> Result<(), String> {
        match &self.flat {
            Some(flat) => {
                // burn 0.22 reads a tensor only into a new `TensorData`; copied from there
                // into the collective's staging buffer.
                let data = flat.clone().into_data();
                let values = data.as_slice::<f32>().map_err(|e| format!("{e:?}"))?;
                host.copy_from_slice(values);
            }
            None => host.iter_mut().for_each(|v| *v = 0.0),
        }
        self.moved.to_host += (self.len * 4) as u64;
        Ok(())
    }

    fn write(&mut self, host: &[f32]) -> Result<(), String> {
        let device = self
            .device
            .clone()
            .ok_or("the gradient buffer has no device yet")?;
        // burn 0.22 writes a tensor only from a `TensorData` it owns: the copy of `host`
        // is the upload's source (the device memory itself comes from burn's pool).
        self.flat = Some(Tensor::<1>::from_data(
            TensorData::new(host.to_vec(), [self.len]),
            &device,
        ));
        self.moved.to_device += (self.len * 4) as u64;
        Ok(())
    }

    fn on_cuda(
        &mut self,
        reduce: &mut dyn FnMut(u64) -> Result<(), CollectiveError>,
    ) -> Result<Option<Result<(), CollectiveError>>, String> {
        match &self.flat {
            #[cfg(feature = "cuda")]
            Some(flat) => crate::cuda_memory::with_address(flat, reduce),
            #[cfg(not(feature = "cuda"))]
            Some(_) => {
                let _ = reduce;
                Ok(None)
            }
            None => Ok(None),
        }
    }
}
