//! The run configuration: one TOML file, dotted `key=value` overrides, validated once.
//!
//! Every table rejects unknown keys, so a misspelt option is an error rather than a
//! silently ignored line. The resolved configuration (file + overrides + defaults) is
//! written next to every run's outputs and into every checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::masking::{Masking, Mix, Ratios, Scheme};
use crate::model::{ModelConfig, Precision};

/// Everything a run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Folder the run writes into: `config.toml`, `metrics.jsonl`, `metrics.csv`,
    /// `checkpoints/`, `eval.json`.
    pub out_dir: PathBuf,
    /// Seed of every random stream: weights, shuffling, masks, dropout.
    #[serde(default)]
    pub seed: u64,
    /// Where the data comes from.
    pub data: DataConfig,
    /// Architecture.
    #[serde(default)]
    pub model: ModelConfig,
    /// Masking scheme(s).
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainConfig,
    /// Evaluation after training (and by `mtm eval`).
    #[serde(default)]
    pub eval: EvalConfig,
    /// Data-parallel training across processes (read when the run is started under
    /// `mpirun`, `srun` or another launcher; a single process ignores most of it).
    #[serde(default)]
    pub distributed: DistributedConfig,
    /// Fine-tuning on held-out sessions (read by `mtm finetune`; `mtm train` ignores it).
    #[serde(default)]
    pub finetune: FinetuneConfig,
    /// Resources of a Slurm job (`mtm launch slurm` writes the batch script from it; under
    /// Slurm, `mtm train` checks the allocation against it).
    #[serde(default)]
    pub slurm: mtm_cluster::slurm::SlurmRequest,
}

/// How `mtm finetune` starts each held-out session's model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Pretrained checkpoint, run or `mtm export` folder whose shared weights start every
    /// held-out model; absent = train from scratch (the baseline). `--checkpoint`
    /// overrides it.
    pub from: Option<PathBuf>,
    /// Train only the new session's stitcher, head and session token, keeping the
    /// pretrained embedding, transformer, positions and prompt tokens fixed.
    pub freeze_backbone: bool,
}

/// Where the model computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// The CPU (burn's flex backend); ranks all-reduce over MPI.
    Cpu,
    /// One CUDA GPU per local rank (needs a build with `--features cuda`); ranks
    /// all-reduce over NCCL.
    Cuda,
    /// A GPU reached through wgpu (Vulkan on Linux, Metal on macOS; Mesa's lavapipe
    /// gives a Vulkan device on the CPU, which is how CI runs it). Needs a build with
    /// `--features wgpu`; wgpu picks the adapter (`CUBECL_WGPU_DEFAULT_DEVICE` overrides
    /// it) and ranks all-reduce over MPI, staged through the host.
    Wgpu,
}

/// What a rank does when its gradients hold NaN or Inf before the all-reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinitePolicy {
    /// Stop the run with an error naming the step and the ranks.
    Stop,
    /// Skip the optimizer step on every rank, log it, and go on.
    Skip,
}

/// Data-parallel settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    /// `cpu`, `cuda` or `wgpu`.
    pub device: DeviceKind,
    /// Seconds any collective may take before the rank gives up, names the ranks that
    /// stopped answering, and exits non-zero. Must exceed the longest legitimate wait
    /// (a checkpoint save, rank 0's validation).
    pub timeout_s: f64,
    /// Gradient all-reduce bucket size in MB of f32 (PyTorch DDP's default: 25).
    pub bucket_mb: f64,
    /// `stop` or `skip` when a rank's gradients are not finite (checked before the
    /// all-reduce, so one rank's NaN never reaches the others).
    pub non_finite: NonFinitePolicy,
    /// Log the step-time breakdown (data wait, forward, backward, all-reduce, optimizer)
    /// every this many steps; 0 = never.
    pub breakdown_every: u64,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            timeout_s: 300.0,
            bucket_mb: 25.0,
            non_finite: NonFinitePolicy::Stop,
            breakdown_every: 100,
        }
    }
}

impl DistributedConfig {
    /// How long any collective may take (`timeout_s`, validated positive and finite).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_s)
    }

    /// Floats per all-reduce bucket.
    pub fn bucket_elems(&self) -> usize {
        ((self.bucket_mb * 1e6 / 4.0) as usize).max(1)
    }
}

/// Data source and batching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset URL: a folder, `file://`, `s3://`, `gs://` or `az://` prefix, or a manifest.
    pub root: String,
    /// Sessions to train on, by eid; empty means every session in the dataset (or those
    /// `select` chooses).
    #[serde(default)]
    pub sessions: Vec<String>,
    /// Sessions chosen as IBL users name them instead of by eid: a list file (BWB's
    /// pretrain/eval lists, an mtm manifest) and/or a ONE cache's sessions by project or
    /// tag, e.g. `select = { list = "pretrain_recording_ids.txt" }`. The dataset's sessions
    /// that it selects are used (those it selects but the dataset lacks are reported);
    /// read at every start, so keep its files unchanged during a run. Not with `sessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<mtm_dataloader::SessionSelect>,
    /// When set and `root` is a local folder that does not exist yet, generate this
    /// synthetic dataset there first (the fields of `mtm synth`: sessions, seed, units,
    /// trials, regions as `[min, max]`, n_bins, binsize, wheel).
    #[serde(default)]
    pub synthesize: Option<mtm_dataloader::SynthConfig>,
    /// Trials per batch (paper: 16). A batch holds trials of one session.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Batches read ahead of training.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Threads that read and decode batches.
    #[serde(default = "default_loader_threads")]
    pub loader_threads: usize,
}

fn default_batch_size() -> usize {
    16
}
fn default_prefetch() -> usize {
    4
}
fn default_loader_threads() -> usize {
    1
}

/// Which masking a run trains with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// `temporal`, `neuron`, `causal`, `inter-region`, `intra-region`, `mtm` (prompted) or
    /// `mtm-not-prompted`.
    #[serde(default = "default_scheme")]
    pub scheme: Masking,
    /// Probability of masking a bin (temporal), a unit (neuron), or a unit inside the
    /// chosen region (intra-region). Paper: 0.3.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Probability of masking a bin under the causal scheme. Paper: 0.6 inside MtM.
    #[serde(default = "default_causal_ratio")]
    pub causal_ratio: f64,
    /// How often `mtm` and `mtm-not-prompted` draw each scheme: relative weights
    /// `neuron`, `causal`, `inter-region`, `intra-region` (default 1 each, the paper's
    /// uniform draw). Only the mixtures read it.
    #[serde(default)]
    pub mix: Mix,
}

fn default_ratio() -> f64 {
    Ratios::default().ratio
}
fn default_causal_ratio() -> f64 {
    Ratios::default().causal_ratio
}

impl MaskingConfig {
    /// The ratios the mask drawing takes.
    pub fn ratios(&self) -> Ratios {
        Ratios {
            ratio: self.ratio,
            causal_ratio: self.causal_ratio,
        }
    }
}

fn default_scheme() -> Masking {
    Masking::Mtm
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            scheme: default_scheme(),
            ratio: default_ratio(),
            causal_ratio: default_causal_ratio(),
            mix: Mix::default(),
        }
    }
}

/// Whether the loss is averaged or summed over the masked entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossReduction {
    /// Mean over masked entries: schemes comparable, learning rate independent of batch size.
    Mean,
    /// Sum over masked entries (the official code).
    Sum,
}

/// Optimisation settings (spec §5 gives the paper's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps; 0 means `epochs` decides.
    pub steps: u64,
    /// Epochs (passes over the training split), used when `steps` is 0.
    pub epochs: u64,
    /// Peak learning rate of the one-cycle schedule (paper: 1e-4).
    pub lr: f64,
    /// AdamW weight decay (paper: 0.01).
    pub weight_decay: f64,
    /// AdamW's decay rate of the squared-gradient average (PyTorch's default: 0.999, a
    /// memory of about 1,000 steps).
    pub beta2: f64,
    /// Fraction of the steps spent warming up from lr/10 (paper: 0.15).
    pub warmup_fraction: f64,
    /// Clip the global gradient norm to this value; 0 turns clipping off.
    pub clip_grad_norm: f64,
    /// Batches whose gradients are summed into one optimizer step.
    pub accumulate: usize,
    /// The per-session weights' (stitchers' and heads') learning rate as a multiple of
    /// the schedule's; the shared weights follow the schedule itself (default 1: one rate
    /// for all, as the paper). A batch holds one session, so with n sessions each session's
    /// own weights step once in about n steps: on a 16-session pool a scale of 10 raised
    /// own-session co-smoothing by about 0.03 at the same steps (docs/scaling/README.md).
    pub session_lr_scale: f64,
    /// `mean` (default) or `sum` of the Poisson loss over masked entries.
    pub loss: LossReduction,
    /// `fp32` (default) or `bf16`: the forward and backward passes' matrix products,
    /// attention and activations in bfloat16, the parameters, AdamW's state, the gradients
    /// and their all-reduce in fp32 (norms, softmax and the loss too, as PyTorch's autocast
    /// does). For CUDA GPUs; the CPU backend runs it too (slowly: it computes bf16 through
    /// f32, which is how the tests check it); wgpu has no bf16 arithmetic and refuses it.
    pub precision: Precision,
    /// Log a metrics line every this many steps.
    pub log_every: u64,
    /// Compute the validation loss every this many steps (and at the end); 0 = only at the end.
    pub validate_every: u64,
    /// Stop early once this many validations in a row have not lowered the best validation
    /// loss (train to convergence; needs `validate_every`); 0 = always run every step. The
    /// run ends with a checkpoint of the step it stopped at. A resumed run starts counting
    /// anew.
    pub early_stop_patience: u64,
    /// Validation batches per validation (0 = the whole validation split).
    pub validate_batches: usize,
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end.
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are deleted); 0 keeps all.
    pub keep_checkpoints: usize,
    /// Start each output head's bias at the log of its unit's mean count per bin on the
    /// training split (its first 256 trials), so that training starts from the mean-rate
    /// model instead of spending its first steps finding each unit's rate (default: on;
    /// without it the quickstart's model learned a third as much, see docs/learning.md).
    pub init_rates: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 0,
            epochs: 1000,
            lr: 1e-4,
            weight_decay: 0.01,
            beta2: 0.999,
            session_lr_scale: 1.0,
            warmup_fraction: 0.15,
            clip_grad_norm: 0.0,
            accumulate: 1,
            loss: LossReduction::Mean,
            precision: Precision::Fp32,
            log_every: 10,
            validate_every: 0,
            validate_batches: 0,
            checkpoint_every: 0,
            keep_checkpoints: 2,
            init_rates: true,
            early_stop_patience: 0,
        }
    }
}

/// One evaluation task (spec §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Leave-one-unit-out prediction (neuron prompt).
    CoSmooth,
    /// The last 10 % of bins from the earlier ones, causal attention (causal prompt).
    Forward,
    /// A held-out unit from the rest of its region only (intra-region prompt).
    Intra,
    /// A whole region from the other regions (inter-region prompt).
    Inter,
    /// Choice decoded from predicted rates (logistic regression; neuron prompt).
    Choice,
    /// Whisker motion energy decoded from predicted rates (ridge; causal prompt).
    Whisker,
}

impl Task {
    /// Every task, in the paper's column order.
    pub const ALL: [Task; 6] = [
        Task::CoSmooth,
        Task::Forward,
        Task::Intra,
        Task::Inter,
        Task::Choice,
        Task::Whisker,
    ];

    /// The name used in configs, reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Task::CoSmooth => "co-smooth",
            Task::Forward => "forward",
            Task::Intra => "intra",
            Task::Inter => "inter",
            Task::Choice => "choice",
            Task::Whisker => "whisker",
        }
    }

    /// Whether the task is scored in bits per spike (the others decode behaviour).
    pub fn is_activity(self) -> bool {
        !matches!(self, Task::Choice | Task::Whisker)
    }

    /// The scheme whose prompt token (and attention) the task uses.
    pub fn scheme(self) -> Scheme {
        match self {
            Task::CoSmooth | Task::Choice => Scheme::Neuron,
            Task::Forward | Task::Whisker => Scheme::Causal,
            Task::Intra => Scheme::IntraRegion,
            Task::Inter => Scheme::InterRegion,
        }
    }
}

impl std::str::FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown task `{s}`; expected one of {}",
                    Task::ALL.map(Task::name).join(", ")
                )
            })
    }
}

/// Evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate at the end of `mtm train`.
    pub after_training: bool,
    /// Tasks to run.
    pub tasks: Vec<Task>,
    /// Trial copies per forward pass in the leave-one-out tasks (each copy holds out other
    /// units; each unit is scored only in its own copy).
    pub rows_per_pass: usize,
    /// Fraction of bins at the end of the trial that forward prediction predicts (spec: 0.1).
    pub forward_fraction: f64,
    /// Units held out together in co-smoothing and intra-region (within one region), each
    /// still scored only from its own copy: 1 (default) is exact leave-one-out; 8 is the
    /// official code's grouping and costs 8x less.
    pub heldout_group: usize,
    /// Also score the standard simple baseline (smoothed spikes and a Poisson GLM per
    /// held-out unit, fit on the training split) on the same entries, and print it under
    /// each session's row.
    pub baseline: bool,
    /// Folder where baseline scores are kept and reused by later evaluations of the same
    /// session, task and split (a baseline depends on the data alone, never on the model):
    /// `mtm sweep` points every cell at one, so that each session's baseline is fit once
    /// per sweep. An entry is used only when the dataset, session, split, task, held-out
    /// grouping, forward fraction, trial counts and spike total all match. Unset: computed
    /// every time.
    pub baseline_cache: Option<PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            after_training: true,
            tasks: Task::ALL.to_vec(),
            rows_per_pass: 256,
            forward_fraction: 0.1,
            heldout_group: 1,
            baseline: true,
            baseline_cache: None,
        }
    }
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`key.path=value`, the value parsed as TOML and
    /// taken as a string when it is not valid TOML), and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Like [`RunConfig::load`] on text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let bad = |message: String| TrainError::Config {
            origin: origin.to_string(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for item in overrides {
            apply_override(&mut table, item).map_err(|m| bad(format!("--set {item}: {m}")))?;
        }
        let config: RunConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        config.validated(origin)
    }

    /// `self` when its values are consistent (see [`RunConfig::problems`]); an error naming
    /// `origin` and every problem otherwise. For configurations changed after parsing.
    pub fn validated(self, origin: &str) -> Result<Self> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(self);
        }
        Err(TrainError::Config {
            origin: origin.to_string(),
            message: problems.join("; "),
        })
    }

    /// Every problem with the values, as one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.model.problems();
        if let Some(select) = &self.data.select {
            out.extend(select.problems());
            if !self.data.sessions.is_empty() {
                out.push("set data.sessions or data.select, not both".into());
            }
        }
        let t = &self.train;
        if t.steps == 0 && t.epochs == 0 {
            out.push("set train.steps or train.epochs".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            out.push(format!("train.lr must be positive, not {}", t.lr));
        }
        if !(t.session_lr_scale > 0.0 && t.session_lr_scale.is_finite()) {
            out.push(format!(
                "train.session_lr_scale must be positive, not {}",
                t.session_lr_scale
            ));
        }
        if !(0.0..1.0).contains(&t.warmup_fraction) {
            out.push(format!(
                "train.warmup_fraction must lie in [0, 1), not {}",
                t.warmup_fraction
            ));
        }
        if t.weight_decay < 0.0 || t.clip_grad_norm < 0.0 {
            out.push("train.weight_decay and train.clip_grad_norm cannot be negative".into());
        }
        if !(0.0..1.0).contains(&t.beta2) {
            out.push(format!("train.beta2 must lie in [0, 1), not {}", t.beta2));
        }
        if t.precision == Precision::Bf16 && self.distributed.device == DeviceKind::Wgpu {
            out.push(
                "train.precision = \"bf16\" needs bf16 arithmetic, which burn's wgpu backend lacks (Vulkan and WGSL shaders in burn 0.22 compute in f32 or f16 only): train on cuda, or keep fp32".into(),
            );
        }
        if t.early_stop_patience > 0 && t.validate_every == 0 {
            out.push("train.early_stop_patience needs train.validate_every".into());
        }
        if t.accumulate == 0 || t.log_every == 0 {
            out.push("train.accumulate and train.log_every must be at least 1".into());
        }
        if self.data.batch_size == 0 {
            out.push("data.batch_size must be at least 1".into());
        }
        let r = self.masking.ratios();
        for (name, p) in [("ratio", r.ratio), ("causal_ratio", r.causal_ratio)] {
            if !(p > 0.0 && p <= 1.0) {
                out.push(format!("masking.{name} must lie in (0, 1], not {p}"));
            }
        }
        out.extend(self.masking.mix.problems());
        if self.masking.mix != Mix::default() && !self.masking.scheme.mixes() {
            out.push(format!(
                "masking.mix weighs MtM's schemes, but masking.scheme = \"{}\" draws no mixture",
                self.masking.scheme.name()
            ));
        }
        let d = &self.distributed;
        if !(d.timeout_s > 0.0 && d.timeout_s.is_finite() && d.bucket_mb > 0.0) {
            out.push(format!(
                "distributed.timeout_s and distributed.bucket_mb must be positive, not {} and {}",
                d.timeout_s, d.bucket_mb
            ));
        }
        if self.eval.rows_per_pass == 0 || self.eval.heldout_group == 0 {
            out.push("eval.rows_per_pass and eval.heldout_group must be at least 1".into());
        }
        if !(self.eval.forward_fraction > 0.0 && self.eval.forward_fraction < 1.0) {
            out.push(format!(
                "eval.forward_fraction must lie in (0, 1), not {}",
                self.eval.forward_fraction
            ));
        }
        out
    }

    /// What makes `other` a different run from this one, in words (empty: the same run,
    /// which a checkpoint of `other` may continue): the model, the seed, the data (root
    /// and sessions) and the masking. Steps, learning rate, logging, evaluation and the
    /// world size may change on resume; these may not.
    pub fn run_differences(&self, other: &RunConfig) -> Vec<&'static str> {
        let mut differences = Vec::new();
        if self.model != other.model {
            differences.push("model");
        }
        if self.seed != other.seed {
            differences.push("seed");
        }
        if self.data.root != other.data.root
            || self.data.sessions != other.data.sessions
            || self.data.select != other.data.select
        {
            differences.push("data");
        }
        if self.masking != other.masking {
            differences.push("masking");
        }
        differences
    }

    /// The resolved configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run config always serialises")
    }
}

/// Sets `a.b.c = value` in `table`, creating tables on the way.
fn apply_override(table: &mut toml::Table, item: &str) -> std::result::Result<(), String> {
    let (key, raw) = item
        .split_once('=')
        .ok_or("expected key=value, e.g. train.steps=100")?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a dotted key"));
    }
    let raw = raw.trim();
    // A bare word such as `mtm` or a path is not TOML; take it as a string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = path.split_last().expect("split gives one part at least");
    let mut cursor = table;
    for part in parents {
        let entry = cursor
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    cursor.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "out_dir = \"runs/x\"\n[data]\nroot = \"data/synthetic\"\n";

    #[test]
    fn the_same_run_is_model_seed_data_and_masking() {
        let parse = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            RunConfig::parse(MINIMAL, "test", &sets).unwrap()
        };
        let base = parse(&[]);
        let continued = parse(&["train.steps=99", "train.lr=1e-3", "eval.baseline=false"]);
        assert!(base.run_differences(&continued).is_empty());
        let other = parse(&["seed=7", "masking.scheme=temporal", "model.hidden=32"]);
        assert_eq!(
            base.run_differences(&other),
            vec!["model", "seed", "masking"]
        );
        assert_eq!(
            base.run_differences(&parse(&["data.root=elsewhere"])),
            vec!["data"]
        );
    }

    #[test]
    fn defaults_are_the_papers() {
        let c = RunConfig::parse(MINIMAL, "test", &[]).unwrap();
        assert_eq!(c.model, ModelConfig::default());
        assert_eq!(c.model.hidden, 512);
        assert_eq!(c.train.lr, 1e-4);
        assert_eq!(c.train.weight_decay, 0.01);
        assert_eq!(c.data.batch_size, 16);
        assert_eq!(c.masking.scheme, Masking::Mtm);
        assert_eq!(c.masking.ratios(), Ratios::default());
    }

    #[test]
    fn overrides_reach_nested_keys_and_bare_words_are_strings() {
        let c = RunConfig::parse(
            MINIMAL,
            "test",
            &[
                "data.root=s3://bucket/ibl".into(),
                "masking.scheme=temporal".into(),
                "train.steps=7".into(),
                "model.positions=rotary".into(),
                "out_dir=/tmp/elsewhere".into(),
                "eval.tasks=[\"co-smooth\", \"inter\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.data.root, "s3://bucket/ibl");
        assert_eq!(c.masking.scheme, Masking::Single(Scheme::Temporal));
        assert_eq!(c.train.steps, 7);
        assert_eq!(c.model.positions, crate::model::Positions::Rotary);
        assert_eq!(c.out_dir, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(c.eval.tasks, vec![Task::CoSmooth, Task::Inter]);
    }

    #[test]
    fn the_mix_is_set_by_scheme_name_and_read_only_by_mixtures() {
        let c = RunConfig::parse(MINIMAL, "test", &["masking.mix.neuron=4".into()]).unwrap();
        assert_eq!(c.masking.mix.weights(), [4.0, 1.0, 1.0, 1.0]);
        let err = RunConfig::parse(
            MINIMAL,
            "cfg.toml",
            &[
                "masking.mix.inter-region=2".into(),
                "masking.scheme=neuron".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("draws no mixture") && err.contains("neuron"),
            "{err}"
        );
        let err = RunConfig::parse(MINIMAL, "cfg.toml", &["masking.mix.temporal=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("temporal"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_their_name() {
        let err = RunConfig::parse(MINIMAL, "cfg.toml", &["train.stpes=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("stpes") && err.contains("cfg.toml"), "{err}");
        let err = RunConfig::parse(MINIMAL, "cfg.toml", &["masking.scheme=spatial".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spatial") && err.contains("mtm"), "{err}");
        let err = RunConfig::parse(MINIMAL, "cfg.toml", &["model.heads=7".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple of model.heads"), "{err}");
        let err = RunConfig::parse(MINIMAL, "cfg.toml", &["train.session_lr_scale=0".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.session_lr_scale must be positive"),
            "{err}"
        );
        let err = RunConfig::parse(MINIMAL, "cfg.toml", &["train.steps".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key=value"), "{err}");
    }

    #[test]
    fn the_resolved_config_reads_back_equal() {
        let c = RunConfig::parse(MINIMAL, "test", &["train.steps=3".into()]).unwrap();
        let again = RunConfig::parse(&c.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn the_shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Sweep files (a `[grid]` table) are checked by the sweep crate.
            let sweep = std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\n[grid]"));
            if path.extension().is_some_and(|e| e == "toml") && !sweep {
                RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "expected the shipped configs in {}",
            dir.display()
        );
    }
}
