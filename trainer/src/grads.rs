//! Gradients as one flat f32 buffer in a fixed parameter order.
//!
//! Accumulation over micro-batches, the global-norm clip and the finiteness check work on
//! this buffer, and it is what a data-parallel run all-reduces: its layout depends on the
//! model's structure alone, so it is identical on every rank whichever sessions a rank's
//! batches came from. A parameter no micro-batch touched (the stitcher of a session not in
//! the batch) is left out of the optimizer step, as PyTorch skips a parameter whose
//! gradient is `None`.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// One parameter's place in the buffer.
#[derive(Clone, Debug)]
struct Slot {
    id: ParamId,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

/// A flat gradient buffer for one model.
#[derive(Clone, Debug)]
pub struct FlatGrads {
    slots: Vec<Slot>,
    /// The gradient values, parameter after parameter.
    pub values: Vec<f32>,
    /// Whether each parameter received a gradient since the last [`FlatGrads::clear`].
    pub touched: Vec<bool>,
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
        let slot = &self.flat.slots[self.index];
        debug_assert_eq!(slot.id, param.id);
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let values = grad
                .into_data()
                .try_into_vec::<f32>()
                .expect("gradients are f32");
            for (acc, g) in self.flat.values[slot.offset..slot.offset + slot.len]
                .iter_mut()
                .zip(values)
            {
                *acc += g;
            }
            self.flat.touched[self.index] = true;
        }
        self.index += 1;
    }
}

impl FlatGrads {
    /// An all-zero buffer laid out for `model`.
    pub fn new<M: Module>(model: &M) -> Self {
        let mut slots = Vec::new();
        let mut layout = Layout(&mut slots, 0);
        model.visit(&mut layout);
        let total = layout.1;
        let n = slots.len();
        Self {
            slots,
            values: vec![0.0; total],
            touched: vec![false; n],
        }
    }

    /// Parameters in the layout.
    pub fn n_params(&self) -> usize {
        self.slots.len()
    }

    /// Zeroes the buffer for the next step.
    pub fn clear(&mut self) {
        self.values.iter_mut().for_each(|v| *v = 0.0);
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

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f32) {
        self.values.iter_mut().for_each(|v| *v *= factor);
    }

    /// The global L2 norm, accumulated in f64.
    pub fn norm(&self) -> f64 {
        self.values
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
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

    /// The gradients of the touched parameters as burn's container for `optim.step`.
    pub fn to_params(&self, device: &Device) -> GradientsParams {
        let mut out = GradientsParams::new();
        for (slot, _) in self.slots.iter().zip(&self.touched).filter(|(_, t)| **t) {
            let data = TensorData::new(
                self.values[slot.offset..slot.offset + slot.len].to_vec(),
                slot.shape.clone(),
            );
            match slot.shape.len() {
                1 => out.register(slot.id, Tensor::<1>::from_data(data, device)),
                2 => out.register(slot.id, Tensor::<2>::from_data(data, device)),
                3 => out.register(slot.id, Tensor::<3>::from_data(data, device)),
                4 => out.register(slot.id, Tensor::<4>::from_data(data, device)),
                rank => unreachable!("NDT1 has no parameter of rank {rank}"),
            }
        }
        out
    }
}
