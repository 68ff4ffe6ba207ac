//! `train.precision = "bf16"` on the CPU backend (flex computes bf16 through f32, so the
//! arithmetic is bf16's rounding, not its speed): the forward pass stays near fp32's but
//! is not fp32's, the parameters stay fp32, and training tracks the fp32 run from the same
//! weights.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::DType;
use mtm_tests::TestRun;
use mtm_trainer::config::{DeviceKind, RunConfig};
use mtm_trainer::model::{Ndt, Precision};
use mtm_trainer::train::Trainer;

/// Largest |bf16 - fp32| of a forward pass relative to the largest |fp32|: bf16 keeps 8
/// significant bits (relative rounding 2^-9 = 2e-3 per operation) through five products
/// per layer (seen: 5.9e-3).
const FORWARD_TOLERANCE: f64 = 3e-2;
/// Largest relative difference of a step's loss over 20 steps (seen: 6.1e-4).
const LOSS_TOLERANCE: f64 = 3e-2;

/// flex draws initial weights from one process-wide generator: tests take turns.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(dir: &Path, run: &str, precision: Precision) -> RunConfig {
    let config = TestRun::new(dir)
        .sessions(2, 5, (20, 30), (120, 150), (2, 3))
        .with(|c| {
            c.out_dir = dir.join(run);
            c.seed = 5;
            c.model.dropout = 0.0;
            c.model.embed_dropout = 0.0;
            c.train.steps = 20;
            c.train.lr = 1e-3;
            c.train.precision = precision;
        })
        .config();
    mtm_trainer::data::prepare_data(&config).unwrap();
    config
}

fn forward(model: &Ndt, session: usize) -> Vec<f32> {
    let model = model.valid();
    let device = model.devices()[0].clone();
    let n = model.sessions()[session].n_units;
    let values: Vec<f32> = (0..4 * 100 * n).map(|i| ((i * 7919) % 5) as f32).collect();
    let x = Tensor::<3>::from_data(TensorData::new(values, [4, 100, n]), &device);
    let out = model.forward(x, session, Some(1), false);
    assert_eq!(out.dtype(), DType::F32, "log rates come out in fp32");
    out.into_data().try_into_vec::<f32>().unwrap()
}

fn relative_gap(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max) as f64;
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max) as f64;
    worst / scale.max(1e-12)
}

struct Dtypes(Vec<DType>);

impl ModuleVisitor for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().dtype());
    }
}

#[test]
fn bf16_trains_like_fp32_and_keeps_fp32_weights() {
    let _lock = RNG.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // The same seed on the same backend: the same initial weights.
    let mut fp32 = Trainer::new(config(dir.path(), "fp32", Precision::Fp32), None).unwrap();
    let mut bf16 = Trainer::new(config(dir.path(), "bf16", Precision::Bf16), None).unwrap();
    assert_eq!(
        fp32.model().parameter_values(),
        bf16.model().parameter_values()
    );
    assert_eq!(bf16.model().valid().precision(), Precision::Bf16);

    for session in 0..2 {
        let gap = relative_gap(
            &forward(fp32.model(), session),
            &forward(bf16.model(), session),
        );
        eprintln!("session {session}: bf16 forward gap {gap:.2e}");
        assert!(gap <= FORWARD_TOLERANCE, "session {session}: {gap:.2e}");
        // The casts are in effect: an fp32 forward pass would give the same values.
        assert!(
            gap > 1e-4,
            "session {session}: bf16 forwards like fp32 ({gap:.2e})"
        );
    }

    let mut worst = 0.0f64;
    let mut losses = vec![];
    for step in 1..=20 {
        let a = fp32.train_step().unwrap();
        let b = bf16.train_step().unwrap();
        let gap = (a.loss - b.loss).abs() / a.loss.abs();
        eprintln!(
            "step {step}: fp32 {:.6} bf16 {:.6} (gap {gap:.2e})",
            a.loss, b.loss
        );
        worst = worst.max(gap);
        losses.push(b.loss);
    }
    assert!(
        worst <= LOSS_TOLERANCE,
        "bf16's losses drift {worst:.2e} from fp32's over 20 steps"
    );
    assert!(
        losses[19] < losses[0],
        "bf16 training did not lower the loss: {losses:?}"
    );
    // Master weights stay fp32 (the gradients are fp32 too: the flat buffer reads them as
    // f32 and would have failed on anything else), and they moved.
    let mut dtypes = Dtypes(vec![]);
    bf16.model().visit(&mut dtypes);
    assert!(dtypes.0.iter().all(|d| *d == DType::F32), "{:?}", dtypes.0);
    assert_ne!(
        fp32.model().parameter_values(),
        bf16.model().parameter_values(),
        "bf16 and fp32 runs ended with identical weights: the casts did nothing"
    );
}

#[test]
fn bf16_on_wgpu_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "refused", Precision::Bf16);
    config.distributed.device = DeviceKind::Wgpu;
    let problems = config.problems().join("; ");
    assert!(
        problems.contains("train.precision") && problems.contains("wgpu"),
        "{problems}"
    );
}
