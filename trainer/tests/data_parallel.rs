//! The trainer's data-parallel logic without `mpirun`: two ranks on threads, joined by the
//! in-process `ThreadCollective`, train like one process accumulating two batches (the
//! same invariant `launch/tests/distributed.rs` checks with real processes under MPI).

use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use mtm_cluster::{Collective, CollectiveError, DeviceBuffer, ReduceOp, ThreadCollective};
use mtm_tests::TestRun;
use mtm_trainer::config::RunConfig;
use mtm_trainer::placement::Placement;
use mtm_trainer::train::{Silent, Trainer};

/// A rank's collective that tells the test when the rank first calls a collective. burn's
/// CPU backend draws initial weights (and dropout) from one process-wide generator: by a
/// rank's first collective its model is built, so the next rank can build its own without
/// interleaving draws. Training itself draws nothing from it here (no dropout).
struct Gate {
    inner: ThreadCollective,
    reached: Option<Sender<()>>,
}

impl Gate {
    fn reach(&mut self) {
        if let Some(tx) = self.reached.take() {
            let _ = tx.send(());
        }
    }
}

impl Collective for Gate {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn set_step(&mut self, step: u64) {
        self.inner.set_step(step);
    }
    fn all_reduce(&mut self, buffer: &mut [f32], op: ReduceOp) -> Result<(), CollectiveError> {
        self.reach();
        self.inner.all_reduce(buffer, op)
    }
    fn broadcast(&mut self, buffer: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.reach();
        self.inner.broadcast(buffer, root)
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.reach();
        self.inner.barrier()
    }
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        self.reach();
        self.inner.all_gather(values)
    }
    fn all_reduce_device(
        &mut self,
        buffer: &mut dyn DeviceBuffer,
        bucket_elems: usize,
        op: ReduceOp,
    ) -> Result<(), CollectiveError> {
        self.reach();
        self.inner.all_reduce_device(buffer, bucket_elems, op)
    }
}

fn config(dir: &Path, run: &str, accumulate: usize) -> RunConfig {
    let config = TestRun::new(dir)
        .sessions(2, 5, (20, 30), (120, 150), (2, 3))
        .with(|c| {
            c.out_dir = dir.join(run);
            c.seed = 3;
            c.model.dropout = 0.0;
            c.model.embed_dropout = 0.0;
            c.train.steps = 5;
            c.train.lr = 3e-3;
            c.train.accumulate = accumulate;
            c.train.validate_every = 5;
            c.train.checkpoint_every = 0;
            c.eval.after_training = false;
        })
        .config();
    mtm_trainer::data::prepare_data(&config).unwrap();
    config
}

/// Parameters and validation loss after a single-process run.
fn single(config: RunConfig) -> (Vec<f32>, f64) {
    let mut trainer = Trainer::new(config, None).unwrap();
    trainer.run(&mut Silent).unwrap();
    let validation = trainer.validate().unwrap().unwrap().loss;
    (trainer.model().parameter_values(), validation)
}

fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        diff += f64::from(x - y).powi(2);
        norm += f64::from(*y).powi(2);
    }
    (diff / norm).sqrt()
}

#[test]
fn two_thread_ranks_train_like_one_process_accumulating_two_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (accumulated, accumulated_val) = single(config(dir.path(), "one", 2));
    let (alone, _) = single(config(dir.path(), "alone", 1));

    let two = config(dir.path(), "two", 1);
    let (tx, rx) = channel();
    let mut ranks = Vec::new();
    for comm in ThreadCollective::group(2, Duration::from_secs(120)) {
        let config = two.clone();
        let comm = Gate {
            inner: comm,
            reached: Some(tx.clone()),
        };
        ranks.push(std::thread::spawn(move || {
            let placement = Placement {
                comm: Box::new(comm),
                local_rank: 0,
            };
            let mut trainer = Trainer::with_placement(config, None, placement).unwrap();
            trainer.run(&mut Silent).unwrap();
            let validation = trainer.validate().unwrap().unwrap().loss;
            (trainer.model().parameter_values(), validation)
        }));
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the rank reaches its first collective");
    }
    let results: Vec<(Vec<f32>, f64)> = ranks.into_iter().map(|r| r.join().unwrap()).collect();

    // Every rank holds the same parameters and validation loss.
    assert!(results[0].0 == results[1].0, "the ranks' parameters differ");
    assert_eq!(results[0].1, results[1].1);
    // ... which are the single process's that accumulates two batches per step,
    let diff = relative_difference(&results[0].0, &accumulated);
    assert!(
        diff <= 1e-5,
        "2 thread ranks vs 1 process: relative difference {diff}"
    );
    assert!((results[0].1 - accumulated_val).abs() <= 1e-5 * accumulated_val);
    // ... and not those of one batch per step (the comparison above can fail).
    let apart = relative_difference(&alone, &accumulated);
    assert!(
        apart > 1e-3,
        "one and two batches per step ended {apart} apart"
    );
    // Only rank 0 wrote the metrics: one line per step.
    let metrics = std::fs::read_to_string(two.out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 5);
}
