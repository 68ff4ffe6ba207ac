//! NDT1 with per-session stitchers, session and prompt tokens (spec §2), in burn.
//!
//! Input counts `(B, T, N_s)` of session s pass through the session's stitcher
//! (`N_s → C`), the shared embedding (`C → 2C`, softsign, `2C → D`) and learned bin
//! positions; a session token and (optionally) a prompt token are prepended; a pre-norm
//! transformer encoder and a final LayerNorm follow; the data tokens go through the
//! session's head (`D → N_s`) to log firing rates per bin.
//!
//! Stitchers, heads and session tokens are keyed by session id, never by unit count.
//! In causal mode every token attends only to itself and earlier tokens: data token t sees
//! the prefix tokens and bins ≤ t; prefix tokens see only prefix tokens, so no future bin
//! reaches any output, at any depth.

use burn::module::{Module, Param, ParamId};
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::{
    Dropout, DropoutConfig, Gelu, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    RotaryEncoding, RotaryEncodingConfig,
};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::{softmax, softsign};
use serde::{Deserialize, Serialize};

/// How the model knows where a bin lies in the trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// A learned embedding per bin, added to the data tokens (NDT1's default).
    Learned,
    /// Rotary embeddings (RoPE) on queries and keys of every attention layer; the paper
    /// reports them better on every task.
    Rotary,
}

/// What the stitcher reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Input {
    /// Spike counts as they are (the paper's choice).
    Counts,
    /// `ln(1 + count)`: compresses the rare large counts of high-rate units.
    Log1p,
}

/// The arithmetic of the forward and backward passes (`train.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in fp32 (default).
    #[default]
    Fp32,
    /// Matrix products, attention and activations in bfloat16, as PyTorch's autocast does:
    /// the parameters stay fp32 (master weights; AdamW's state and the gradients, which
    /// come back through the casts in fp32, and their all-reduce), and the layer norms,
    /// the softmax, rotary positions and the loss compute in fp32.
    Bf16,
}

impl Precision {
    /// The dtype the matrix products compute in; `None` for fp32 (no casts at all).
    fn compute(self) -> Option<FloatDType> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }
}

/// A linear layer computing in `dt` (its fp32 weights cast on the way in).
fn linear_in<const D: usize>(layer: &Linear, x: Tensor<D>, dt: Option<FloatDType>) -> Tensor<D> {
    match dt {
        None => layer.forward(x),
        Some(dt) => burn::tensor::module::linear(
            x,
            layer.weight.val().cast(dt),
            layer.bias.as_ref().map(|b| b.val().cast(dt)),
        ),
    }
}

/// A layer norm in fp32 whatever the compute dtype, its output back in `dt`.
fn norm_in<const D: usize>(norm: &LayerNorm, x: Tensor<D>, dt: Option<FloatDType>) -> Tensor<D> {
    match dt {
        None => norm.forward(x),
        Some(dt) => norm.forward(x.cast(FloatDType::F32)).cast(dt),
    }
}

/// `f` applied in fp32 to a tensor of the compute dtype `dt`, the result back in `dt`.
fn in_f32<const D: usize>(
    x: Tensor<D>,
    dt: Option<FloatDType>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    match dt {
        None => f(x),
        Some(dt) => f(x.cast(FloatDType::F32)).cast(dt),
    }
}

/// Architecture sizes. The defaults are the paper's (spec §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Stitcher output width C (paper: 668).
    pub stitch_dim: usize,
    /// Transformer width D (paper: 512).
    pub hidden: usize,
    /// Transformer layers (paper: 5).
    pub layers: usize,
    /// Attention heads (paper: 8).
    pub heads: usize,
    /// Hidden width of each layer's MLP (paper: 1024).
    pub mlp: usize,
    /// Dropout inside the transformer (paper: 0.4).
    pub dropout: f64,
    /// Dropout on the embedding (paper: 0.2).
    pub embed_dropout: f64,
    /// Bins per trial T (paper: 100).
    pub n_bins: usize,
    /// Prompt tokens, one per masking scheme (4 MtM schemes + temporal).
    pub prompts: usize,
    /// Position encoding: `learned` (default) or `rotary`.
    pub positions: Positions,
    /// What the stitcher reads: `counts` (default, the paper's) or `log1p`.
    pub input: Input,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            stitch_dim: 668,
            hidden: 512,
            layers: 5,
            heads: 8,
            mlp: 1024,
            dropout: 0.4,
            embed_dropout: 0.2,
            n_bins: 100,
            prompts: 5,
            positions: Positions::Learned,
            input: Input::Counts,
        }
    }
}

impl ModelConfig {
    /// Floating-point operations of one training step (forward and backward, counted as
    /// three forward passes, the usual convention for model FLOPs utilisation) on a batch
    /// of `batch` trials of `units` units with a prompt token: the matrix products of the
    /// stitcher, embedding, attention projections, attention itself, MLP and head, two
    /// operations per multiply-add. Element-wise work (norms, softmax, activations) is
    /// left out, as MFU counts it.
    pub fn train_flops(&self, batch: usize, units: usize) -> f64 {
        let (t, c, d, m) = (
            self.n_bins as f64,
            self.stitch_dim as f64,
            self.hidden as f64,
            self.mlp as f64,
        );
        let (b, n) = (batch as f64, units as f64);
        // Session and prompt tokens before the data tokens.
        let l = t + 2.0;
        let embed = t * (n * c + c * 2.0 * c + 2.0 * c * d);
        let per_layer = l * (d * 3.0 * d + d * d + 2.0 * d * m) + 2.0 * l * l * d;
        let head = t * d * n;
        let forward = 2.0 * b * (embed + self.layers as f64 * per_layer + head);
        3.0 * forward
    }

    /// Problems with these sizes, if any, as one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, value) in [
            ("stitch_dim", self.stitch_dim),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("mlp", self.mlp),
            ("n_bins", self.n_bins),
            ("prompts", self.prompts),
        ] {
            if value == 0 {
                out.push(format!("model.{name} must be at least 1"));
            }
        }
        if self.heads > 0 && !self.hidden.is_multiple_of(self.heads) {
            out.push(format!(
                "model.hidden ({}) must be a multiple of model.heads ({})",
                self.hidden, self.heads
            ));
        } else if self.positions == Positions::Rotary
            && self.heads > 0
            && !(self.hidden / self.heads).is_multiple_of(2)
        {
            out.push(format!(
                "rotary positions need an even head width; model.hidden / model.heads = {}",
                self.hidden / self.heads
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("embed_dropout", self.embed_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                out.push(format!("model.{name} must lie in [0, 1), not {p}"));
            }
        }
        out
    }
}

/// A session the model has a stitcher and head for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// Session id.
    pub eid: String,
    /// Units N_s.
    pub n_units: usize,
    /// Brain region (Allen acronym) of each unit, in unit order; empty when unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

/// Prefix tokens before the data tokens: the session token and at most one prompt token.
const MAX_PREFIX: usize = 2;

/// One pre-LayerNorm transformer layer. Written here rather than taken from burn's
/// `TransformerEncoder` because rotary positions act on queries and keys inside the
/// attention, which burn's layer does not expose.
#[derive(Module, Debug)]
struct Block {
    attn_norm: LayerNorm,
    qkv: Linear,
    attn_out: Linear,
    mlp_norm: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    gelu: Gelu,
    dropout: Dropout,
    #[module(skip)]
    heads: usize,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: Option<&Tensor<4, Bool>>,
        rope: Option<&RotaryEncoding>,
        dt: Option<FloatDType>,
    ) -> Tensor<3> {
        let [batch, length, width] = x.dims();
        let head_width = width / self.heads;
        let qkv = linear_in(&self.qkv, norm_in(&self.attn_norm, x.clone(), dt), dt);
        let split = |part: usize| {
            qkv.clone()
                .slice_dim(2, part * width..(part + 1) * width)
                .reshape([batch, length, self.heads, head_width])
                .swap_dims(1, 2)
        };
        let (mut q, mut k, v) = (split(0), split(1), split(2));
        if let Some(rope) = rope {
            q = in_f32(q, dt, |q| rope.forward(q));
            k = in_f32(k, dt, |k| rope.forward(k));
        }
        let scores = q.matmul(k.swap_dims(2, 3)) / (head_width as f64).sqrt();
        let scores = match mask {
            Some(mask) => scores.mask_fill(mask.clone(), f32::NEG_INFINITY),
            None => scores,
        };
        let weights = crate::dropout::forward(&self.dropout, in_f32(scores, dt, |s| softmax(s, 3)));
        let context = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, length, width]);
        let x = x + crate::dropout::forward(&self.dropout, linear_in(&self.attn_out, context, dt));
        let h = self.gelu.forward(linear_in(
            &self.mlp_in,
            norm_in(&self.mlp_norm, x.clone(), dt),
            dt,
        ));
        x + crate::dropout::forward(&self.dropout, linear_in(&self.mlp_out, h, dt))
    }
}

/// The NDT1 model.
#[derive(Module, Debug)]
pub struct Ndt {
    stitchers: Vec<Linear>,
    heads: Vec<Linear>,
    embed_in: Linear,
    embed_out: Linear,
    embed_dropout: Dropout,
    positions: Param<Tensor<2>>,
    session_tokens: Param<Tensor<2>>,
    prompt_tokens: Param<Tensor<2>>,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    // A module field, not skipped: its tables are constants (neither parameters nor saved),
    // but moving the model (`to_device`, `valid`) must move them with it; skipped, they
    // stayed on the training device and evaluation on the CPU after a wgpu or CUDA run
    // mixed devices.
    rope: Option<RotaryEncoding>,
    #[module(skip)]
    input: Input,
    #[module(skip)]
    sessions: Vec<SessionSpec>,
    #[module(skip)]
    precision: Precision,
}

impl ModelConfig {
    /// Builds a model for `sessions` on `device`, its parameters drawn now from the
    /// device's generator (seed it first for reproducible weights; on flex that generator
    /// is process-wide, so build models one at a time).
    pub fn init(&self, sessions: &[SessionSpec], device: &Device) -> Ndt {
        let (c, d) = (self.stitch_dim, self.hidden);
        let token = |rows: usize| {
            Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([rows.max(1), d], device)
        };
        let block = || Block {
            attn_norm: LayerNormConfig::new(d).init(device),
            qkv: LinearConfig::new(d, 3 * d).init(device),
            attn_out: LinearConfig::new(d, d).init(device),
            mlp_norm: LayerNormConfig::new(d).init(device),
            mlp_in: LinearConfig::new(d, self.mlp).init(device),
            mlp_out: LinearConfig::new(self.mlp, d).init(device),
            gelu: Gelu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            heads: self.heads,
        };
        let model = Ndt {
            stitchers: sessions
                .iter()
                .map(|s| LinearConfig::new(s.n_units, c).init(device))
                .collect(),
            heads: sessions
                .iter()
                .map(|s| LinearConfig::new(d, s.n_units).init(device))
                .collect(),
            embed_in: LinearConfig::new(c, 2 * c).init(device),
            embed_out: LinearConfig::new(2 * c, d).init(device),
            embed_dropout: DropoutConfig::new(self.embed_dropout).init(),
            positions: token(self.n_bins),
            session_tokens: token(sessions.len()),
            prompt_tokens: token(self.prompts),
            blocks: (0..self.layers).map(|_| block()).collect(),
            final_norm: LayerNormConfig::new(d).init(device),
            rope: (self.positions == Positions::Rotary).then(|| {
                RotaryEncodingConfig::new(MAX_PREFIX + self.n_bins, d / self.heads).init(device)
            }),
            input: self.input,
            sessions: sessions.to_vec(),
            precision: Precision::Fp32,
        };
        // burn draws parameters lazily, at first use; drawing them all now, in field order,
        // makes the weights depend on the seed alone, not on which forward pass comes first.
        model.visit(&mut Materialize);
        model
    }
}

struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

impl Ndt {
    /// Every parameter value, in the model's fixed parameter order (the order of the flat
    /// gradient buffer).
    pub fn parameter_values(&self) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl burn::module::ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(
                    param
                        .val()
                        .into_data()
                        .try_into_vec::<f32>()
                        .expect("parameters are f32"),
                );
            }
        }
        let mut collect = Collect(Vec::new());
        self.visit(&mut collect);
        collect.0
    }

    /// The model computing in `precision` (its parameters stay fp32 either way).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The arithmetic of its forward pass.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.positions.val().device()
    }

    /// The model with every shared parameter (embedding, positions, prompt tokens,
    /// transformer, final norm) excluded from training: only stitchers, heads and session
    /// tokens keep gradients.
    pub fn freeze_backbone(self) -> Self {
        Self {
            embed_in: self.embed_in.set_require_grad(false),
            embed_out: self.embed_out.set_require_grad(false),
            positions: self.positions.set_require_grad(false),
            prompt_tokens: self.prompt_tokens.set_require_grad(false),
            blocks: self.blocks.set_require_grad(false),
            final_norm: self.final_norm.set_require_grad(false),
            ..self
        }
    }

    /// The ids of the per-session weights (every stitcher's and every head's weight and
    /// bias): the parameters one session's batches alone train.
    pub fn session_param_ids(&self) -> Vec<ParamId> {
        self.stitchers
            .iter()
            .chain(&self.heads)
            .flat_map(|l| std::iter::once(l.weight.id).chain(l.bias.as_ref().map(|b| b.id)))
            .collect()
    }

    /// The model with session `session`'s head bias set to `bias` (one value per unit).
    pub fn with_head_bias(mut self, session: usize, bias: &[f32]) -> Self {
        let head = &mut self.heads[session];
        if let Some(param) = head.bias.take() {
            let values = bias.to_vec();
            head.bias = Some(param.map(move |old| {
                let device = old.device();
                let shape = old.dims();
                Tensor::<1>::from_data(TensorData::new(values, shape), &device)
                    .set_require_grad(true)
            }));
        }
        self
    }

    /// The sessions, in stitcher order.
    pub fn sessions(&self) -> &[SessionSpec] {
        &self.sessions
    }

    /// Index of the session with this eid.
    pub fn session_index(&self, eid: &str) -> Option<usize> {
        self.sessions.iter().position(|s| s.eid == eid)
    }

    /// Log firing rates `(B, T, N_s)` for counts `(B, T, N_s)` (masked entries already zeroed)
    /// of session `session`, with an optional prompt token; `causal` makes attention strictly
    /// causal.
    pub fn forward(
        &self,
        spikes: Tensor<3>,
        session: usize,
        prompt: Option<usize>,
        causal: bool,
    ) -> Tensor<3> {
        let [batch, bins, _] = spikes.dims();
        let device = spikes.device();
        let spikes = match self.input {
            Input::Counts => spikes,
            Input::Log1p => spikes.log1p(),
        };
        let dt = self.precision.compute();
        let cast = |t: Tensor<2>| match dt {
            Some(dt) => t.cast(dt),
            None => t,
        };
        let spikes = match dt {
            Some(dt) => spikes.cast(dt),
            None => spikes,
        };
        let x = linear_in(&self.stitchers[session], spikes, dt);
        let x = linear_in(
            &self.embed_out,
            softsign(linear_in(&self.embed_in, x, dt)),
            dt,
        );
        let x = match self.rope {
            Some(_) => x,
            None => x + cast(self.positions.val().slice_dim(0, 0..bins)).unsqueeze::<3>(),
        };
        let x = crate::dropout::forward(&self.embed_dropout, x);
        let d = x.dims()[2];
        let token = |table: &Param<Tensor<2>>, row: usize| {
            cast(table.val().slice_dim(0, row..row + 1))
                .unsqueeze::<3>()
                .expand([batch, 1, d])
        };
        let mut parts = vec![token(&self.session_tokens, session)];
        if let Some(p) = prompt {
            parts.push(token(&self.prompt_tokens, p));
        }
        let prefix = parts.len();
        parts.push(x);
        let mut x = Tensor::cat(parts, 1);
        let length = prefix + bins;
        let heads = self.blocks.first().map_or(1, |b| b.heads);
        // `true` marks a key the query may not see: every later token.
        let mask = causal.then(|| {
            generate_autoregressive_mask(1, length, &device)
                .unsqueeze_dim::<4>(1)
                .expand([batch, heads, length, length])
        });
        for block in &self.blocks {
            x = block.forward(x, mask.as_ref(), self.rope.as_ref(), dt);
        }
        let h = norm_in(&self.final_norm, x, dt);
        let h = h.slice([0..batch, prefix..length]);
        // Log rates in fp32: the loss exponentiates them.
        linear_in(&self.heads[session], h, dt).cast(FloatDType::F32)
    }
}

/// A `(B, T, N)` tensor on `device` from host values in row-major order.
pub fn tensor3(values: Vec<f32>, shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Poisson negative log-likelihood `exp(l) - y·l` on the scored entries: their mean
/// (default) or their sum (the official code's choice).
pub fn masked_poisson_nll(
    log_rates: Tensor<3>,
    counts: Tensor<3>,
    scored: Tensor<3>,
    mean: bool,
) -> Tensor<1> {
    let nll = (log_rates.clone().exp() - counts * log_rates) * scored.clone();
    let total = nll.sum();
    if mean {
        total / scored.sum().clamp_min(1.0)
    } else {
        total
    }
}

#[cfg(test)]
mod tests {
    use burn::optim::{AdamWConfig, GradientsParams};

    use super::*;

    #[test]
    fn train_flops_count_the_matrix_products() {
        // One layer, every width 1, 3 bins (5 tokens with session and prompt). Multiply-
        // adds: per data token 1 + 2 + 2 = 5 (stitcher, the two embeddings) and 1 (head);
        // per token 3 + 1 + 2 = 6 (qkv, output, MLP); 2·L² for attention (scores, values).
        let config = ModelConfig {
            stitch_dim: 1,
            hidden: 1,
            layers: 1,
            heads: 1,
            mlp: 1,
            n_bins: 3,
            ..ModelConfig::default()
        };
        let (t, l) = (3.0, 5.0);
        let forward_macs = t * 5.0 + l * 6.0 + 2.0 * l * l + t * 1.0;
        assert_eq!(config.train_flops(1, 1), 3.0 * 2.0 * forward_macs);
        // Linear in the batch.
        assert_eq!(config.train_flops(4, 1), 4.0 * config.train_flops(1, 1));
    }

    /// flex draws every random number from one process-wide generator: tests that seed it
    /// and build models take turns, or they would consume each other's draws.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
        RNG.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tiny() -> ModelConfig {
        ModelConfig {
            stitch_dim: 16,
            hidden: 32,
            layers: 2,
            heads: 4,
            mlp: 64,
            dropout: 0.1,
            embed_dropout: 0.1,
            n_bins: 20,
            prompts: 5,
            positions: Positions::Learned,
            input: Input::Counts,
        }
    }

    fn sessions() -> Vec<SessionSpec> {
        vec![
            SessionSpec {
                eid: "a".into(),
                n_units: 12,
                regions: vec![],
            },
            SessionSpec {
                eid: "b".into(),
                n_units: 12,
                regions: vec![],
            },
        ]
    }

    fn counts(seed: u64, batch: usize, bins: usize, units: usize) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..batch * bins * units)
            .map(|_| rng.random_range(0..3) as f32)
            .collect()
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.try_to_vec_as::<f32>().unwrap()
    }

    #[test]
    fn causal_mode_is_strictly_causal_prefix_tokens_included() {
        for positions in [Positions::Learned, Positions::Rotary] {
            check_causality(ModelConfig {
                positions,
                ..tiny()
            });
        }
    }

    fn check_causality(config: ModelConfig) {
        let _rng = rng_lock();
        let device = Device::flex();
        device.seed(1);
        let model = config.init(&sessions(), &device).valid();
        let (b, t, n, cut) = (2, 20, 12, 13);
        let x = counts(1, b, t, n);
        let mut changed = x.clone();
        for k in 0..b {
            for v in &mut changed[(k * t + cut) * n..(k + 1) * t * n] {
                *v += 3.0;
            }
        }
        let run = |data: &[f32], causal: bool| {
            let input = Tensor::<3>::from_data(TensorData::new(data.to_vec(), [b, t, n]), &device);
            values(model.forward(input, 1, Some(1), causal))
        };
        let (before, after) = (run(&x, true), run(&changed, true));
        for k in 0..b {
            for bin in 0..t {
                let (lo, hi) = ((k * t + bin) * n, (k * t + bin + 1) * n);
                let diff = before[lo..hi]
                    .iter()
                    .zip(&after[lo..hi])
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0f32, f32::max);
                if bin < cut {
                    assert!(
                        diff < 1e-6,
                        "trial {k} bin {bin} changed by {diff} when only later bins changed"
                    );
                } else if bin == cut {
                    assert!(diff > 1e-4, "the changed bin itself must change");
                }
            }
        }
        // The same change reaches earlier bins when attention is bidirectional.
        let (before, after) = (run(&x, false), run(&changed, false));
        let early = (0..cut * n)
            .map(|i| (before[i] - after[i]).abs())
            .fold(0.0f32, f32::max);
        assert!(
            early > 1e-4,
            "bidirectional attention should see later bins ({early})"
        );
    }

    #[test]
    fn rotary_positions_make_the_model_order_aware_without_learned_positions() {
        let _rng = rng_lock();
        let device = Device::flex();
        device.seed(5);
        let config = ModelConfig {
            positions: Positions::Rotary,
            ..tiny()
        };
        assert!(config.problems().is_empty());
        let model = config.init(&sessions(), &device).valid();
        // The same count vector in every bin: only positions can tell the bins apart.
        let row: Vec<f32> = counts(5, 1, 1, 12);
        let same: Vec<f32> = (0..20).flat_map(|_| row.clone()).collect();
        let x = Tensor::<3>::from_data(TensorData::new(same, [1, 20, 12]), &device);
        let out = values(model.forward(x, 0, None, false));
        let spread = (0..12)
            .map(|u| (out[u] - out[19 * 12 + u]).abs())
            .fold(0.0f32, f32::max);
        assert!(spread > 1e-5, "rotary outputs ignore the bin ({spread})");
        let odd = ModelConfig {
            hidden: 30,
            heads: 10,
            ..config
        };
        assert!(odd.problems().iter().any(|p| p.contains("even head width")));
    }

    #[test]
    fn sessions_with_equal_unit_counts_get_their_own_stitchers() {
        let _rng = rng_lock();
        let device = Device::flex();
        device.seed(2);
        let model = tiny().init(&sessions(), &device).valid();
        assert_eq!(model.session_index("b"), Some(1));
        let x = Tensor::<3>::from_data(TensorData::new(counts(2, 1, 20, 12), [1, 20, 12]), &device);
        let a = values(model.forward(x.clone(), 0, None, false));
        let b = values(model.forward(x, 1, None, false));
        assert_ne!(a, b);
    }

    #[test]
    fn the_same_seed_gives_the_same_weights() {
        let _rng = rng_lock();
        let device = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(counts(3, 1, 20, 12), [1, 20, 12]), &device);
        device.seed(7);
        let first = values(tiny().init(&sessions(), &device).valid().forward(
            x.clone(),
            0,
            Some(0),
            false,
        ));
        device.seed(7);
        let second = values(tiny().init(&sessions(), &device).valid().forward(
            x,
            0,
            Some(0),
            false,
        ));
        assert_eq!(first, second);
    }

    #[test]
    fn training_lowers_the_masked_poisson_loss() {
        let _rng = rng_lock();
        let device = Device::flex().autodiff();
        device.seed(4);
        let mut model = tiny().init(&sessions(), &device);
        let (b, t, n) = (8, 20, 12);
        // Unit u fires at a rate that depends on u and on the bin: learnable structure.
        let rates: Vec<f32> = (0..b * t * n)
            .map(|i| 0.2 + ((i % n) as f32 * 0.15) * (((i / n) % t) as f32 / t as f32))
            .collect();
        let y = Tensor::<3>::from_data(TensorData::new(rates, [b, t, n]), &device);
        let scored = Tensor::<3>::ones([b, t, n], &device);
        let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
        let mut losses = Vec::new();
        for _ in 0..40 {
            let out = model.forward(y.clone(), 0, Some(0), false);
            let loss = masked_poisson_nll(out, y.clone(), scored.clone(), true);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(3e-3, model, grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last < first - 0.1,
            "loss went from {first} to {last}: {losses:?}"
        );
    }
}
