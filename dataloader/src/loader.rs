//! The prefetch pipeline: worker threads read and decode the batches the sampler plans,
//! ahead of the consumer, and hand them over in plan order. Training reads an endless
//! stream of epochs ([`Loader::new`]); validation reads a fixed plan once
//! ([`Loader::fixed`], see [`Sampler::sequential_plan`]).
//!
//! Jobs go to a bounded queue of `depth` batches; `threads` workers take them, fetch row
//! groups (through the dataset's cache) and decode; results are reordered by sequence
//! number, so the consumer sees exactly the sampler's order whatever the thread timing.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::dataset::{Batch, Dataset};
use crate::error::{DataError, Result};
use crate::sampler::{BatchPlan, Sampler, SamplerState};
use crate::session::Split;

/// Prefetch settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchConfig {
    /// Batches read ahead of the consumer.
    pub depth: usize,
    /// Worker threads that fetch and decode.
    pub threads: usize,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            depth: 8,
            threads: 2,
        }
    }
}

struct Job {
    seq: u64,
    plan: BatchPlan,
}

/// Where the plans come from.
enum Plans {
    /// The sampler's epochs, endlessly.
    Epochs {
        sampler: Sampler,
        /// The next batch the consumer receives.
        state: SamplerState,
        /// The next batch to submit, and the plan of its epoch.
        submit_state: SamplerState,
        submit_plan: (u64, Vec<BatchPlan>),
    },
    /// A fixed list, once.
    Fixed(std::vec::IntoIter<BatchPlan>),
}

impl Plans {
    fn next_plan(&mut self) -> Option<BatchPlan> {
        match self {
            Plans::Epochs {
                sampler,
                submit_state,
                submit_plan,
                ..
            } => {
                if submit_plan.0 != submit_state.epoch {
                    *submit_plan = (submit_state.epoch, sampler.rank_plan(submit_state.epoch));
                }
                let plan = submit_plan.1[submit_state.position].clone();
                *submit_state = sampler.advance(*submit_state);
                Some(plan)
            }
            Plans::Fixed(plans) => plans.next(),
        }
    }
}

/// A stream of batches for one rank: endless and restorable over the sampler's epochs, or
/// one pass over a fixed plan.
pub struct Loader {
    dataset: Arc<Dataset>,
    plans: Plans,
    split: Split,
    next_submit: u64,
    next_deliver: u64,
    depth: usize,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(u64, BatchPlan, Result<Batch>)>,
    ready: BTreeMap<u64, (BatchPlan, Result<Batch>)>,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// An endless loader over `split` of `dataset`, following `sampler` from `state`.
    pub fn new(
        dataset: Arc<Dataset>,
        split: Split,
        sampler: Sampler,
        state: SamplerState,
        prefetch: PrefetchConfig,
    ) -> Result<Self> {
        if state.position >= sampler.steps_per_epoch() {
            return Err(DataError::Config(format!(
                "sampler position {} is past the {} steps of an epoch",
                state.position,
                sampler.steps_per_epoch()
            )));
        }
        let submit_plan = (state.epoch, sampler.rank_plan(state.epoch));
        let plans = Plans::Epochs {
            sampler,
            state,
            submit_state: state,
            submit_plan,
        };
        Self::start(dataset, split, plans, prefetch)
    }

    /// A loader that reads the batches of `plans` over `split` of `dataset` once, in order.
    pub fn fixed(
        dataset: Arc<Dataset>,
        split: Split,
        plans: Vec<BatchPlan>,
        prefetch: PrefetchConfig,
    ) -> Result<Self> {
        Self::start(dataset, split, Plans::Fixed(plans.into_iter()), prefetch)
    }

    fn start(
        dataset: Arc<Dataset>,
        split: Split,
        plans: Plans,
        prefetch: PrefetchConfig,
    ) -> Result<Self> {
        let threads = prefetch.threads.max(1);
        let depth = prefetch.depth.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(depth);
        let (result_tx, results) = sync_channel(depth + threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|i| {
                let job_rx = Arc::clone(&job_rx);
                let result_tx = result_tx.clone();
                let dataset = Arc::clone(&dataset);
                std::thread::Builder::new()
                    .name(format!("mtm-prefetch-{i}"))
                    .spawn(move || worker(&dataset, split, &job_rx, &result_tx))
                    .map_err(|e| DataError::Config(format!("cannot start a prefetch thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut loader = Self {
            dataset,
            plans,
            split,
            next_submit: 0,
            next_deliver: 0,
            depth,
            jobs: Some(job_tx),
            results,
            ready: BTreeMap::new(),
            workers,
        };
        loader.fill();
        Ok(loader)
    }

    /// Where the stream stands: save it, and a loader built with it continues exactly here
    /// (the default state for a fixed plan).
    pub fn state(&self) -> SamplerState {
        match &self.plans {
            Plans::Epochs { state, .. } => *state,
            Plans::Fixed(_) => SamplerState::default(),
        }
    }

    /// The sampler this loader follows (`None` for a fixed plan).
    pub fn sampler(&self) -> Option<&Sampler> {
        match &self.plans {
            Plans::Epochs { sampler, .. } => Some(sampler),
            Plans::Fixed(_) => None,
        }
    }

    /// The dataset this loader reads.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The split this loader reads.
    pub fn split(&self) -> Split {
        self.split
    }

    fn fill(&mut self) {
        let Some(jobs) = &self.jobs else { return };
        while self.next_submit < self.next_deliver + self.depth as u64 {
            let Some(plan) = self.plans.next_plan() else {
                break; // A fixed plan is all submitted.
            };
            let job = Job {
                seq: self.next_submit,
                plan,
            };
            if jobs.send(job).is_err() {
                break; // Workers are gone; the error surfaces in next_batch.
            }
            self.next_submit += 1;
        }
    }

    /// Hands a consumed batch's buffers back for reuse (see [`Dataset::recycle`]).
    pub fn recycle(&self, batch: Batch) {
        self.dataset.recycle(batch);
    }

    /// The next batch in the plan's order, with its plan; `None` once a fixed plan is read.
    pub fn next_planned(&mut self) -> Option<Result<(BatchPlan, Batch)>> {
        let seq = self.next_deliver;
        if seq == self.next_submit {
            return None;
        }
        let (plan, result) = loop {
            if let Some(ready) = self.ready.remove(&seq) {
                break ready;
            }
            match self.results.recv() {
                Ok((s, plan, result)) => {
                    self.ready.insert(s, (plan, result));
                }
                Err(_) => {
                    return Some(Err(DataError::Config(
                        "the prefetch workers stopped".into(),
                    )));
                }
            }
        };
        self.next_deliver += 1;
        if let Plans::Epochs { sampler, state, .. } = &mut self.plans {
            *state = sampler.advance(*state);
        }
        self.fill();
        Some(result.map(|batch| (plan, batch)))
    }

    /// The next batch in the plan's order (an error once a fixed plan is read).
    pub fn next_batch(&mut self) -> Result<Batch> {
        self.next_planned()
            .unwrap_or_else(|| Err(DataError::Config("the loader's plan is read".into())))
            .map(|(_, batch)| batch)
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_planned().map(|r| r.map(|(_, batch)| batch))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the job queue ends each worker after the (at most `depth`) queued jobs;
        // the result queue holds `depth + threads`, so no worker blocks handing one over.
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn worker(
    dataset: &Dataset,
    split: Split,
    jobs: &Mutex<Receiver<Job>>,
    results: &SyncSender<(u64, BatchPlan, Result<Batch>)>,
) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.recv()
        };
        let Ok(job) = job else { return };
        let batch = dataset.read_batch(job.plan.session, split, &job.plan.trials);
        if results.send((job.seq, job.plan, batch)).is_err() {
            return;
        }
    }
}
