//! The wgpu backend against the CPU backend: the same model forwards to the same values,
//! twenty training steps track the CPU run's losses, a checkpoint written on wgpu reloads
//! on the CPU to the same predictions, and a resumed wgpu run ends bitwise equal to an
//! uninterrupted one; the gradients stay on the device unless the collective needs them
//! on the host, and then cross once each way per step. CI runs these on Mesa's lavapipe
//! (a Vulkan device on the CPU).
#![cfg(feature = "wgpu")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::Module;
use burn::prelude::*;
use mtm_cluster::{Collective, CollectiveError, DeviceBuffer, HostStaging, ReduceOp};
use mtm_tests::TestRun;
use mtm_trainer::artifact::Artifact;
use mtm_trainer::config::{DeviceKind, RunConfig};
use mtm_trainer::model::Ndt;
use mtm_trainer::placement::Placement;
use mtm_trainer::train::{Silent, Trainer};

/// Largest |wgpu - cpu| of a forward pass, relative to the largest |cpu|: float sums in
/// another order (cubecl's tiled matmul and reductions) differ by a few ulp per operation
/// (seen on lavapipe: 1.2e-7).
const FORWARD_TOLERANCE: f64 = 1e-5;
/// Largest relative difference of a step's loss over 20 steps: rounding differences grow
/// through the optimizer's updates (seen on lavapipe: 1.4e-6).
const LOSS_TOLERANCE: f64 = 1e-4;

/// Rotary positions keep constant tables in the model, which must move with it.
const ROTARY: &[&str] = &["model.positions=\"rotary\""];

/// Tests that train take turns (flex draws from one process-wide generator).
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|p| p.into_inner())
}

fn config(dir: &Path, run: &str, device: DeviceKind, steps: u64, extra: &[&str]) -> RunConfig {
    let config = TestRun::new(dir)
        .sessions(2, 5, (20, 30), (120, 150), (2, 3))
        .with(|c| {
            c.out_dir = dir.join(run);
            c.seed = 3;
            // burn's dropout draws on the device and flex's in bulk on the host: the two
            // runs can only be compared without it.
            c.model.dropout = 0.0;
            c.model.embed_dropout = 0.0;
            c.train.steps = steps;
            c.train.lr = 1e-3;
            c.train.clip_grad_norm = 1.0;
            c.train.accumulate = 2;
            c.train.checkpoint_every = 3;
            c.train.keep_checkpoints = 0;
            c.distributed.device = device;
        })
        .set(extra)
        .config();
    mtm_trainer::data::prepare_data(&config).unwrap();
    config
}

fn wgpu() -> Device {
    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff()
}

/// A trainer on wgpu starting from `start`'s weights (initial draws differ between
/// backends' generators, so the comparison starts from one model).
fn wgpu_trainer(config: RunConfig, start: &Ndt) -> Trainer {
    let start = start.clone();
    Trainer::with_init(config, None, Placement::single(), move |_| {
        // `fork`, not `to_device`: the moved parameters must be leaves of the new graph.
        Ok(start.fork(&wgpu()))
    })
    .unwrap()
}

fn forward(model: &Ndt, session: usize, causal: bool) -> Vec<f32> {
    let model = model.valid();
    let device = model.devices()[0].clone();
    let n = model.sessions()[session].n_units;
    let values: Vec<f32> = (0..4 * 100 * n).map(|i| ((i * 7919) % 5) as f32).collect();
    let x = Tensor::<3>::from_data(TensorData::new(values, [4, 100, n]), &device);
    let prompt = causal.then_some(1);
    model
        .forward(x, session, prompt, causal)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// max |a - b| / max |a|.
fn relative_gap(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let gap = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let scale = a.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    gap / scale.max(1e-12)
}

#[test]
fn wgpu_forwards_and_trains_as_the_cpu_backend_does() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cpu =
        Trainer::new(config(dir.path(), "cpu", DeviceKind::Cpu, 20, ROTARY), None).unwrap();
    let mut gpu = wgpu_trainer(
        config(dir.path(), "wgpu", DeviceKind::Wgpu, 20, ROTARY),
        cpu.model(),
    );
    assert!(
        format!("{:?}", gpu.model().devices()[0]).contains("Wgpu"),
        "the wgpu run computes on {:?}",
        gpu.model().devices()[0]
    );

    for session in 0..cpu.sessions().len() {
        for causal in [false, true] {
            let gap = relative_gap(
                &forward(cpu.model(), session, causal),
                &forward(gpu.model(), session, causal),
            );
            eprintln!("session {session}, causal {causal}: forward gap {gap:.2e}");
            assert!(
                gap <= FORWARD_TOLERANCE,
                "session {session} (causal {causal}): wgpu's forward is {gap:.2e} from the CPU's"
            );
        }
    }

    let mut worst = 0.0f64;
    let (mut first, mut last) = (0.0, 0.0);
    for step in 1..=20 {
        let a = cpu.train_step().unwrap();
        let b = gpu.train_step().unwrap();
        let gap = (a.loss - b.loss).abs() / a.loss.abs();
        eprintln!(
            "step {step}: cpu {:.6} wgpu {:.6} (gap {gap:.2e})",
            a.loss, b.loss
        );
        assert!(a.loss.is_finite() && b.loss.is_finite());
        worst = worst.max(gap);
        if step == 1 {
            first = a.loss;
        }
        last = a.loss;
    }
    assert!(
        worst <= LOSS_TOLERANCE,
        "wgpu's losses drift {worst:.2e} from the CPU run's over 20 steps"
    );
    // The runs did move (tracking a loss that stays put would prove nothing).
    assert!(last < first, "the loss went from {first} to {last}");
    let trained = relative_gap(
        &forward(cpu.model(), 0, false),
        &forward(gpu.model(), 0, false),
    );
    eprintln!("after 20 steps: forward gap {trained:.2e}");
    assert!(trained <= 100.0 * FORWARD_TOLERANCE, "{trained:.2e}");

    // Moved to the CPU (as the evaluation after training does), the model predicts what
    // it predicts on wgpu.
    let moved = gpu.model().valid().to_device(&Device::flex());
    for session in 0..gpu.sessions().len() {
        let gap = relative_gap(
            &forward(&moved, session, true),
            &forward(gpu.model(), session, true),
        );
        assert!(
            gap <= FORWARD_TOLERANCE,
            "moved, session {session}: {gap:.2e}"
        );
    }
    // A checkpoint written from wgpu reloads on the CPU to wgpu's predictions.
    let saved = gpu.save_checkpoint().unwrap();
    let loaded = Artifact::open(&saved)
        .unwrap()
        .model(&Device::flex())
        .unwrap();
    for session in 0..gpu.sessions().len() {
        let gap = relative_gap(
            &forward(&loaded, session, false),
            &forward(gpu.model(), session, false),
        );
        assert!(gap <= FORWARD_TOLERANCE, "session {session}: {gap:.2e}");
    }
    // Validation runs on the device too.
    let validation = gpu
        .validate()
        .unwrap()
        .expect("the test sessions have val trials");
    assert!(validation.loss.is_finite());
}

#[test]
fn a_resumed_wgpu_run_ends_bitwise_equal_to_an_uninterrupted_one() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let start = Trainer::new(config(dir.path(), "start", DeviceKind::Cpu, 6, &[]), None)
        .unwrap()
        .model()
        .clone();
    let straight = config(dir.path(), "straight", DeviceKind::Wgpu, 6, &[]);
    wgpu_trainer(straight.clone(), &start)
        .run(&mut Silent)
        .unwrap();

    let interrupted = config(dir.path(), "interrupted", DeviceKind::Wgpu, 6, &[]);
    let mut first = wgpu_trainer(interrupted.clone(), &start);
    first.run_until(4, &mut Silent).unwrap();
    drop(first);
    let saved = interrupted.out_dir.join("checkpoints/step-00000003");
    let mut resumed = Trainer::new(interrupted.clone(), Some(&saved)).unwrap();
    assert_eq!(resumed.step, 3);
    resumed.run(&mut Silent).unwrap();

    let weights = |run: &RunConfig| {
        Artifact::open(&run.out_dir.join("checkpoints/step-00000006"))
            .unwrap()
            .model(&Device::flex())
            .unwrap()
            .parameter_values()
    };
    let (a, b) = (weights(&straight), weights(&interrupted));
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert!(
        differing == 0,
        "{differing} of {} resumed parameters differ from the uninterrupted wgpu run's",
        a.len()
    );
    // Training moved the weights (equal weights that never changed would prove nothing).
    assert!(weights(&straight) != start.parameter_values());
}

/// A collective of two ranks whose peer mirrors this one: every rank holds the same
/// gradients, so a mean leaves them as they are and a sum doubles them. With `native`
/// its device all-reduce is "device-native": it reduces the buffer where it is, touching
/// no byte of it (the identity is the mean of two equal buffers); otherwise it stages the
/// buffer through the host as MPI does. It counts the device all-reduces it is handed.
struct Mirror {
    native: bool,
    staging: HostStaging,
    device_calls: Arc<AtomicUsize>,
}

impl Collective for Mirror {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        2
    }
    fn backend(&self) -> &'static str {
        "mirror"
    }
    fn set_step(&mut self, _step: u64) {}
    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        if op == ReduceOp::Sum {
            buffer.iter_mut().for_each(|v| *v *= 2.0);
        }
        Ok(())
    }
    fn broadcast(&mut self, _buffer: &mut [u8], _root: usize) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        Ok([values, values].concat())
    }
    fn all_reduce_device(
        &mut self,
        buffer: &mut dyn DeviceBuffer,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        self.device_calls.fetch_add(1, Ordering::Relaxed);
        if self.native {
            assert_eq!(
                op,
                ReduceOp::Mean,
                "the mirror reduces only means on the device"
            );
            return Ok(());
        }
        let mut staging = std::mem::take(&mut self.staging);
        let result = staging.all_reduce(self, 0, buffer, bucket_elems, op);
        self.staging = staging;
        result
    }
}

#[test]
fn gradients_cross_to_the_host_only_for_a_host_collective_and_then_once_each_way() {
    let _lock = lock();
    let dir = tempfile::tempdir().unwrap();
    let start = Trainer::new(config(dir.path(), "start", DeviceKind::Cpu, 6, &[]), None)
        .unwrap()
        .model()
        .clone();
    const STEPS: u64 = 4;
    let run = |name: &str, native: bool| {
        let config = config(dir.path(), name, DeviceKind::Wgpu, STEPS, &[]);
        let start = start.clone();
        let calls = Arc::new(AtomicUsize::new(0));
        let placement = Placement {
            comm: Box::new(Mirror {
                native,
                staging: HostStaging::default(),
                device_calls: Arc::clone(&calls),
            }),
            local_rank: 0,
        };
        let mut trainer =
            Trainer::with_init(config, None, placement, move |_| Ok(start.fork(&wgpu()))).unwrap();
        let n = trainer.n_parameters() as u64;
        let before = trainer.gradient_transfers();
        let mut losses = vec![];
        for step in 1..=STEPS {
            losses.push(trainer.train_step().unwrap().loss);
            let moved = trainer.gradient_transfers();
            let expected = if native { 0 } else { step * 4 * n };
            eprintln!("{name}, step {step}: {moved:?} ({n} parameters)");
            assert_eq!(
                (
                    moved.to_host - before.to_host,
                    moved.to_device - before.to_device
                ),
                (expected, expected),
                "{name}: gradient bytes moved between host and device after {step} steps"
            );
        }
        // Every step reduced its gradients through the device path.
        assert_eq!(calls.load(Ordering::Relaxed), STEPS as usize, "{name}");
        (losses, trainer.model().parameter_values())
    };
    let (native_losses, native_weights) = run("native", true);
    let (staged_losses, staged_weights) = run("staged", false);
    // The round trip copies the gradients exactly, but the staged run's buffer is a new
    // allocation: cubecl may pick another vector width for it and sum the norm in another
    // order, so the two runs agree to rounding, not bit for bit (seen: 1 ulp of a loss).
    for (step, (a, b)) in native_losses.iter().zip(&staged_losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {}: native {a} against staged {b}",
            step + 1
        );
    }
    let gap = relative_gap(&native_weights, &staged_weights);
    assert!(
        gap <= 1e-5,
        "parameters after the host round trip differ by {gap:.2e}"
    );
    assert!(native_losses.iter().all(|l| l.is_finite()));
    assert!(
        native_weights != start.parameter_values(),
        "training moved nothing"
    );
}
