//! Tensor I/O: named tensors to and from safetensors bytes (f32, f16 or bf16), and into a
//! model. Checkpoints, exports and fine-tuning all read weights through here.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::{ModuleSnapshot, SafetensorsStore};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::model::{ModelConfig, Ndt, SessionSpec};

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Floating-point type of exported weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
    /// 32-bit (as trained).
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl std::str::FromStr for WeightType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown weight type `{other}`; expected f32, f16 or bf16"
            )),
        }
    }
}

/// Tensors under burn's names, as `(shape, dtype, little-endian bytes)`.
pub type BurnTensors = BTreeMap<String, (Vec<usize>, Dtype, Vec<u8>)>;

/// A 2-D row-major matrix transposed.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// `values` as little-endian bytes of `dtype`.
pub fn encode(values: &[f32], dtype: WeightType) -> (Dtype, Vec<u8>) {
    match dtype {
        WeightType::F32 => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        WeightType::F16 => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        WeightType::Bf16 => (
            Dtype::BF16,
            values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        ),
    }
}

/// A safetensors view's values as f32 (F32, F16 or BF16); `path` and `name` for errors.
pub fn decode(view: &TensorView<'_>, path: &Path, name: &str) -> Result<Vec<f32>> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(bad(path, format!("{name}: unsupported dtype {other:?}"))),
    })
}

/// Named tensors serialised as safetensors bytes.
pub fn serialize(
    tensors: &BTreeMap<String, (Vec<usize>, Dtype, Vec<u8>)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, dtype, bytes))| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).expect("shape matches the data"),
            )
        })
        .collect();
    safetensors::serialize(views, metadata).expect("tensors serialise")
}

/// A safetensors file's tensors, under the names it stores, as f32.
pub fn read_file(weights_path: &Path) -> Result<BurnTensors> {
    let bytes = std::fs::read(weights_path).map_err(TrainError::io(weights_path))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(weights_path, e.to_string()))?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = decode(&view, weights_path, &name)?;
            Ok((
                name,
                (
                    view.shape().to_vec(),
                    Dtype::F32,
                    encode(&values, WeightType::F32).1,
                ),
            ))
        })
        .collect()
}

/// Loads `tensors` into `model`; `partial` allows parameters the tensors do not cover.
/// Returns (loaded, missing) parameter names.
pub fn apply(
    model: &mut Ndt,
    tensors: &BurnTensors,
    partial: bool,
    origin: &Path,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut store =
        SafetensorsStore::from_bytes(Some(serialize(tensors, None))).allow_partial(partial);
    let applied = model
        .load_from(&mut store)
        .map_err(|e| bad(origin, e.to_string()))?;
    if !applied.errors.is_empty() {
        return Err(bad(
            origin,
            format!(
                "does not fit this architecture: {}",
                applied
                    .errors
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    let missing: Vec<String> = applied.missing.into_iter().map(|(p, _)| p).collect();
    if !partial && !missing.is_empty() {
        return Err(bad(
            origin,
            format!("does not fit the architecture: missing {missing:?}"),
        ));
    }
    Ok((applied.applied, missing))
}

/// A model of `architecture` for `sessions` on `device`, with every weight from `tensors`
/// (read from `origin`, named in errors).
pub fn build(
    architecture: &ModelConfig,
    sessions: &[SessionSpec],
    tensors: &BurnTensors,
    origin: &Path,
    device: &burn::prelude::Device,
) -> Result<Ndt> {
    let mut model = architecture.init(sessions, device);
    apply(&mut model, tensors, false, origin)?;
    Ok(model)
}
