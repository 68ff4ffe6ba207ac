//! Portable export of a checkpoint: weights under plain names in PyTorch's layout, a JSON
//! description of everything needed to run them, a model card, and a reference input and
//! output to check a re-implementation against.
//!
//! Tensor names (`L` a layer, `i` a row of the session table in `config.json`); every
//! `*.weight` of a linear map is `[out, in]` as in `torch.nn.Linear` (`y = x W^T + b`):
//!
//! | name | shape |
//! |---|---|
//! | `sessions.{i}.stitcher.weight`, `.bias` | `[C, N_i]`, `[C]` |
//! | `sessions.{i}.head.weight`, `.bias` | `[N_i, D]`, `[N_i]` |
//! | `session_tokens` (row i: session i) | `[S, D]` |
//! | `prompt_tokens` (row order: `config.json` `masking.prompt_order`) | `[P, D]` |
//! | `positions` (learned positions of bins; unused with rotary) | `[T, D]` |
//! | `embed.in.weight`, `.bias` / `embed.out.weight`, `.bias` | `[2C, C]` / `[D, 2C]` |
//! | `layers.{L}.attn_norm.weight`, `.bias` | `[D]` |
//! | `layers.{L}.attn.qkv.weight`, `.bias` (rows: q, k, v) | `[3D, D]`, `[3D]` |
//! | `layers.{L}.attn.out.weight`, `.bias` | `[D, D]`, `[D]` |
//! | `layers.{L}.mlp_norm.weight`, `.bias` | `[D]` |
//! | `layers.{L}.mlp.in.weight`, `.bias` / `layers.{L}.mlp.out.weight`, `.bias` | `[M, D]` / `[D, M]` |
//! | `final_norm.weight`, `.bias` | `[D]` |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use rand::{Rng, SeedableRng};
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::masking::Scheme;
use crate::model::{ModelConfig, Ndt, SessionSpec};
use crate::weights::{self, BurnTensors, WeightType, decode, encode, serialize, transpose};

/// The `format` field of an export's `config.json`.
pub const FORMAT: &str = "mtm-ndt1-export";

/// One row of the session table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedSession {
    /// Row of `sessions.{index}.*` and of `session_tokens`.
    pub index: usize,
    /// Session id.
    pub eid: String,
    /// Units N_i (inputs of the stitcher, outputs of the head).
    pub n_units: usize,
    /// Region of each unit, in unit order (empty when the checkpoint does not know them).
    pub regions: Vec<String>,
}

/// How the exported network computes, beyond its sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Computation {
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// The MLP's activation.
    pub activation: String,
    /// The nonlinearity between `embed.in` and `embed.out`.
    pub embedding_activation: String,
    /// Prefix tokens before the bins: the session token, then the prompt token if any.
    pub prefix: String,
    /// Causal mode.
    pub causal: String,
    /// Rotary positions, when `architecture.positions` is `rotary`.
    pub rotary: String,
    /// What the output is.
    pub output: String,
    /// The forward pass in order.
    pub forward: Vec<String>,
}

/// `config.json` of an export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Version of this layout.
    pub format_version: u32,
    /// Every architecture field.
    pub architecture: ModelConfig,
    /// How the network computes.
    pub computation: Computation,
    /// The session table.
    pub sessions: Vec<ExportedSession>,
    /// Every region appearing in the session table, sorted.
    pub region_vocabulary: Vec<String>,
    /// Masking the model was trained with, the schemes and the prompt order.
    pub masking: serde_json::Value,
    /// Steps trained, seed, dataset.
    pub training: serde_json::Value,
    /// Exported weight type.
    pub weight_type: WeightType,
    /// The run's resolved configuration (TOML), for `mtm` to evaluate or fine-tune from.
    pub run_config_toml: String,
}

/// What [`export`] wrote.
#[derive(Debug)]
pub struct ExportSummary {
    /// The export folder.
    pub dir: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub parameters: usize,
}

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// burn's name of a tensor → the export's name, and whether the tensor is a linear
/// weight (transposed from burn's `[in, out]` to `[out, in]`).
fn export_name(burn: &str) -> Option<(String, bool)> {
    let parts: Vec<&str> = burn.split('.').collect();
    fn leaf(l: &str) -> &str {
        match l {
            "gamma" => "weight",
            "beta" => "bias",
            other => other,
        }
    }
    let name = match parts.as_slice() {
        ["stitchers", i, p] => format!("sessions.{i}.stitcher.{p}"),
        ["heads", i, p] => format!("sessions.{i}.head.{p}"),
        ["embed_in", p] => format!("embed.in.{p}"),
        ["embed_out", p] => format!("embed.out.{p}"),
        ["blocks", l, "attn_norm", p] => format!("layers.{l}.attn_norm.{}", leaf(p)),
        ["blocks", l, "mlp_norm", p] => format!("layers.{l}.mlp_norm.{}", leaf(p)),
        ["blocks", l, "qkv", p] => format!("layers.{l}.attn.qkv.{p}"),
        ["blocks", l, "attn_out", p] => format!("layers.{l}.attn.out.{p}"),
        ["blocks", l, "mlp_in", p] => format!("layers.{l}.mlp.in.{p}"),
        ["blocks", l, "mlp_out", p] => format!("layers.{l}.mlp.out.{p}"),
        ["final_norm", p] => format!("final_norm.{}", leaf(p)),
        ["positions"] | ["session_tokens"] | ["prompt_tokens"] => burn.to_string(),
        _ => return None,
    };
    let linear_weight = parts.last() == Some(&"weight");
    Some((name, linear_weight))
}

/// The inverse of [`export_name`].
fn burn_name(export: &str) -> Option<String> {
    let parts: Vec<&str> = export.split('.').collect();
    fn leaf(l: &str) -> &str {
        match l {
            "weight" => "gamma",
            "bias" => "beta",
            other => other,
        }
    }
    Some(match parts.as_slice() {
        ["sessions", i, "stitcher", p] => format!("stitchers.{i}.{p}"),
        ["sessions", i, "head", p] => format!("heads.{i}.{p}"),
        ["embed", "in", p] => format!("embed_in.{p}"),
        ["embed", "out", p] => format!("embed_out.{p}"),
        ["layers", l, "attn_norm", p] => format!("blocks.{l}.attn_norm.{}", leaf(p)),
        ["layers", l, "mlp_norm", p] => format!("blocks.{l}.mlp_norm.{}", leaf(p)),
        ["layers", l, "attn", "qkv", p] => format!("blocks.{l}.qkv.{p}"),
        ["layers", l, "attn", "out", p] => format!("blocks.{l}.attn_out.{p}"),
        ["layers", l, "mlp", "in", p] => format!("blocks.{l}.mlp_in.{p}"),
        ["layers", l, "mlp", "out", p] => format!("blocks.{l}.mlp_out.{p}"),
        ["final_norm", p] => format!("final_norm.{}", leaf(p)),
        ["positions"] | ["session_tokens"] | ["prompt_tokens"] => export.to_string(),
        _ => return None,
    })
}

/// A tensor's shape and values, transposed when it is a linear weight (`flip`): burn
/// stores `[in, out]`, the export `[out, in]`, and the map is its own inverse.
fn oriented(shape: Vec<usize>, values: Vec<f32>, flip: bool) -> (Vec<usize>, Vec<f32>) {
    if flip {
        let (rows, cols) = (shape[0], shape[1]);
        (vec![cols, rows], transpose(&values, rows, cols))
    } else {
        (shape, values)
    }
}

/// The prompt order of the model: prompt token `p` is scheme `order[p]`.
pub fn prompt_order() -> Vec<&'static str> {
    let mut order = vec![""; Scheme::MTM.len() + 1];
    for s in Scheme::MTM.into_iter().chain([Scheme::Temporal]) {
        order[s.prompt()] = s.name();
    }
    order
}

/// The reference input of an export: two trials of session 0, seeded counts 0-3.
fn reference_input(n_bins: usize, n_units: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    (0..2 * n_bins * n_units)
        .map(|_| {
            let u: f64 = rng.random();
            // Mostly zeros, as spike counts in 20 ms bins are.
            if u < 0.8 {
                0.0
            } else if u < 0.95 {
                1.0
            } else if u < 0.99 {
                2.0
            } else {
                3.0
            }
        })
        .collect()
}

/// The forward passes recorded in `reference.safetensors`: (name, prompt, causal).
pub fn reference_cases() -> Vec<(&'static str, Option<usize>, bool)> {
    vec![
        ("log_rates.no_prompt", None, false),
        (
            "log_rates.neuron_prompt",
            Some(Scheme::Neuron.prompt()),
            false,
        ),
        (
            "log_rates.causal_prompt_causal",
            Some(Scheme::Causal.prompt()),
            true,
        ),
    ]
}

/// Exports the checkpoint at `checkpoint` (a checkpoint or run folder) into `out`, which
/// must not exist or be empty. Weights are written as `dtype`.
pub fn export(checkpoint_path: &Path, out: &Path, dtype: WeightType) -> Result<ExportSummary> {
    let dir = checkpoint::resolve(checkpoint_path)?;
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(TrainError::io(out))?
            .next()
            .is_some()
    {
        return Err(bad(
            out,
            "the export folder exists and is not empty; nothing was written (choose a new --out)",
        ));
    }
    let device = Device::flex();
    let config = checkpoint::read_config(&dir)?;
    let weights_path = dir.join("model.safetensors");
    // The weights are read once: for the model (the reference output) and for the export.
    let checkpoint_tensors = weights::read_file(&weights_path)?;
    let model = weights::build(
        &config.model,
        &checkpoint::read_sessions(&dir)?,
        &checkpoint_tensors,
        &weights_path,
        &device,
    )?;
    let state = checkpoint::read_state(&dir).ok();
    let mut tensors = BTreeMap::new();
    let mut parameters = 0usize;
    for (name, (shape, _, bytes)) in &checkpoint_tensors {
        let (export, linear) = export_name(name).ok_or_else(|| {
            bad(
                &weights_path,
                format!("tensor `{name}` has no export name (another architecture?)"),
            )
        })?;
        // `read_file` hands every tensor over as little-endian f32.
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (shape, values) = oriented(shape.clone(), values, linear);
        parameters += values.len();
        let (dt, data) = encode(&values, dtype);
        tensors.insert(export, (shape, dt, data));
    }
    let sessions: Vec<ExportedSession> = model
        .sessions()
        .iter()
        .enumerate()
        .map(|(index, s)| ExportedSession {
            index,
            eid: s.eid.clone(),
            n_units: s.n_units,
            regions: s.regions.clone(),
        })
        .collect();
    let mut vocabulary: Vec<String> = sessions
        .iter()
        .flat_map(|s| s.regions.iter().cloned())
        .collect();
    vocabulary.sort();
    vocabulary.dedup();
    let export_config = ExportConfig {
        format: FORMAT.into(),
        format_version: 1,
        architecture: config.model.clone(),
        computation: computation(),
        sessions,
        region_vocabulary: vocabulary,
        masking: serde_json::json!({
            "trained_with": config.masking.scheme.name(),
            "prompted": config.masking.scheme.prompted(),
            "schemes": Scheme::ALL.map(Scheme::name),
            "prompt_order": prompt_order(),
            "ratio": config.masking.ratio,
            "causal_ratio": config.masking.causal_ratio,
        }),
        training: serde_json::json!({
            "steps": state.as_ref().map(|s| s.step),
            "total_steps": state.as_ref().map(|s| s.total_steps),
            "world_size": state.as_ref().map(|s| s.world_size),
            "seed": config.seed,
            "dataset": config.data.root,
            "checkpoint": dir.display().to_string(),
        }),
        weight_type: dtype,
        run_config_toml: config.to_toml(),
    };
    let tmp = out.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    let metadata = std::collections::HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("layout".to_string(), "linear weights [out, in]".to_string()),
    ]);
    let n_tensors = tensors.len();
    let write = |name: &str, data: &[u8]| {
        let path = tmp.join(name);
        std::fs::write(&path, data).map_err(TrainError::io(path))
    };
    write("model.safetensors", &serialize(&tensors, Some(metadata)))?;
    write(
        "config.json",
        serde_json::to_string_pretty(&export_config)
            .expect("serialises")
            .as_bytes(),
    )?;
    write("reference.safetensors", &reference(&model, &config.model))?;
    write(
        "MODEL_CARD.md",
        model_card(&export_config, &dir, parameters).as_bytes(),
    )?;
    if out.exists() {
        std::fs::remove_dir(out).map_err(TrainError::io(out))?;
    }
    std::fs::rename(&tmp, out).map_err(TrainError::io(out))?;
    Ok(ExportSummary {
        dir: out.to_path_buf(),
        tensors: n_tensors,
        parameters,
    })
}

fn computation() -> Computation {
    Computation {
        layer_norm_eps: 1e-5,
        activation: "GELU, exact (erf) form".into(),
        embedding_activation: "softsign x / (1 + |x|)".into(),
        prefix: "session_tokens[i], then prompt_tokens[p] when a prompt is given".into(),
        causal: "token j attends to tokens <= j (prefix tokens included), masked scores set to -inf before the softmax".into(),
        rotary: "theta 10000 over the head width h: pair (2k, 2k+1) of q and k at sequence position t (prefix tokens included, from 0) rotated by t / 10000^(2k/h); positions unused".into(),
        output: "log firing rate per bin and unit (Poisson: rate = exp(output))".into(),
        forward: vec![
            "x: counts [B, T, N_i] (masked entries zeroed); architecture.input = log1p: x = ln(1 + x)".into(),
            "x = x @ sessions.{i}.stitcher.weight^T + bias".into(),
            "x = embed.out(softsign(embed.in(x)))".into(),
            "learned positions: x = x + positions[:T]".into(),
            "x = concat(session token, [prompt token], x) along the sequence".into(),
            "per layer: x = x + attn.out(attention(attn.qkv(LN_attn(x)))); x = x + mlp.out(gelu(mlp.in(LN_mlp(x))))".into(),
            "attention: q, k, v = split(qkv, 3) along features; heads = architecture.heads; softmax(q k^T / sqrt(D / heads)) v".into(),
            "x = final_norm(x); drop the prefix tokens; output = sessions.{i}.head(x)".into(),
        ],
    }
}

/// `reference.safetensors`: the input and the model's outputs for [`reference_cases`].
fn reference(model: &Ndt, arch: &ModelConfig) -> Vec<u8> {
    let device = model.device();
    let n_units = model.sessions()[0].n_units;
    let input = reference_input(arch.n_bins, n_units);
    let shape = [2, arch.n_bins, n_units];
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "input".to_string(),
        (
            shape.to_vec(),
            Dtype::F32,
            encode(&input, WeightType::F32).1,
        ),
    );
    let mut metadata =
        std::collections::HashMap::from([("session_index".to_string(), "0".to_string())]);
    for (name, prompt, causal) in reference_cases() {
        let x = Tensor::<3>::from_data(TensorData::new(input.clone(), shape), &device);
        let out = model
            .forward(x, 0, prompt, causal)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 output");
        tensors.insert(
            name.to_string(),
            (shape.to_vec(), Dtype::F32, encode(&out, WeightType::F32).1),
        );
        metadata.insert(
            format!("{name}.prompt"),
            prompt.map_or("none".into(), |p| p.to_string()),
        );
        metadata.insert(format!("{name}.causal"), causal.to_string());
    }
    serialize(&tensors, Some(metadata))
}

fn model_card(config: &ExportConfig, checkpoint: &Path, parameters: usize) -> String {
    let a = &config.architecture;
    let run_dir = checkpoint.parent().and_then(Path::parent);
    let metrics = run_dir
        .map(|d| d.join(crate::report::RUN_REPORT))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<crate::report::Report>(&t).ok());
    let mut card = format!(
        "# NDT1 trained with multi-task masking (mtm)\n\n\
         - Architecture: NDT1, C = {} stitcher width, D = {} hidden, {} layers, {} heads, MLP {}, {} bins per trial, {} positions, {} prompt tokens; {parameters} parameters.\n\
         - Trained with `{}` masking for {} steps (seed {}), on {} session(s) of `{}`.\n\
         - Weights: `model.safetensors` ({:?}), linear weights `[out, in]` as in PyTorch; names and the forward pass are described in `config.json` (`computation`) and in mtm's `trainer/src/export.rs`.\n\
         - Check a re-implementation against `reference.safetensors`: its `input` (two trials of session 0) and the log-rates mtm computes for it.\n\n",
        a.stitch_dim,
        a.hidden,
        a.layers,
        a.heads,
        a.mlp,
        a.n_bins,
        match a.positions {
            crate::model::Positions::Learned => "learned",
            crate::model::Positions::Rotary => "rotary",
        },
        a.prompts,
        config.masking["trained_with"].as_str().unwrap_or("?"),
        config.training["steps"],
        config.training["seed"],
        config.sessions.len(),
        config.training["dataset"].as_str().unwrap_or("?"),
        config.weight_type,
    );
    card.push_str("## Sessions\n\n| index | eid | units |\n|---|---|---|\n");
    for s in &config.sessions {
        card.push_str(&format!("| {} | {} | {} |\n", s.index, s.eid, s.n_units));
    }
    card.push_str("\n## Metrics at export\n\n");
    match &metrics {
        Some(report) => {
            card.push_str("Test split, mean over sessions (bits per spike per-unit mean; choice accuracy; whisker R²):\n\n");
            for (task, value) in &report.mean {
                let value = value.map_or("null".to_string(), |v| v.to_string());
                card.push_str(&format!("- {}: {value}\n", task.name()));
            }
        }
        None => card.push_str(
            "No evaluation report was found beside the checkpoint (`mtm eval` writes one).\n",
        ),
    }
    card.push_str("\n## Loading\n\n```python\nfrom safetensors.numpy import load_file\nimport json\nweights = load_file(\"model.safetensors\")\nconfig = json.load(open(\"config.json\"))\n```\n");
    card
}

/// Whether `dir` holds an export (its `config.json` has the export format).
pub fn is_export(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["format"] == FORMAT)
}

/// An export's description, run configuration, sessions and weights (under burn's names,
/// f32, burn's layout).
pub fn read_export(dir: &Path) -> Result<(ExportConfig, RunConfig, Vec<SessionSpec>, BurnTensors)> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(TrainError::io(&config_path))?;
    let export: ExportConfig =
        serde_json::from_str(&text).map_err(|e| bad(&config_path, e.to_string()))?;
    let run = RunConfig::parse(
        &export.run_config_toml,
        &config_path.display().to_string(),
        &[],
    )?;
    let sessions: Vec<SessionSpec> = export
        .sessions
        .iter()
        .map(|s| SessionSpec {
            eid: s.eid.clone(),
            n_units: s.n_units,
            regions: s.regions.clone(),
        })
        .collect();
    let weights_path = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights_path).map_err(TrainError::io(&weights_path))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(&weights_path, e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let burn = burn_name(&name)
            .ok_or_else(|| bad(&weights_path, format!("unknown tensor `{name}`")))?;
        let (shape, values) = oriented(
            view.shape().to_vec(),
            decode(&view, &weights_path, &name)?,
            burn.ends_with(".weight"),
        );
        tensors.insert(
            burn,
            (shape, Dtype::F32, encode(&values, WeightType::F32).1),
        );
    }
    Ok((export, run, sessions, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for burn in [
            "stitchers.3.weight",
            "heads.0.bias",
            "embed_in.weight",
            "blocks.2.attn_norm.gamma",
            "blocks.0.mlp_norm.beta",
            "blocks.4.qkv.weight",
            "blocks.1.attn_out.bias",
            "blocks.1.mlp_in.weight",
            "blocks.1.mlp_out.bias",
            "final_norm.gamma",
            "positions",
            "session_tokens",
            "prompt_tokens",
        ] {
            let (export, _) = export_name(burn).unwrap();
            assert!(
                !export.contains("gamma") && !export.contains("blocks"),
                "{export}"
            );
            assert_eq!(burn_name(&export).as_deref(), Some(burn));
        }
        assert_eq!(export_name("blocks.0.unknown.weight"), None);
        assert!(export_name("stitchers.0.weight").unwrap().1);
        assert!(!export_name("final_norm.gamma").unwrap().1);
    }

    #[test]
    fn prompt_order_matches_the_model() {
        assert_eq!(
            prompt_order(),
            [
                "neuron",
                "causal",
                "inter-region",
                "intra-region",
                "temporal"
            ]
        );
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
