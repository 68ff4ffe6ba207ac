//! The prefetch pipeline: worker threads read and decode the batches the sampler plans,
//! ahead of the consumer, and hand them over in plan order.
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

/// An endless, restorable stream of batches for one rank.
pub struct Loader {
    dataset: Arc<Dataset>,
    sampler: Sampler,
    split: Split,
    /// The next batch the consumer receives.
    state: SamplerState,
    /// The next batch to submit, and its plan.
    submit_state: SamplerState,
    submit_plan: (u64, Vec<BatchPlan>),
    next_submit: u64,
    next_deliver: u64,
    depth: usize,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(u64, Result<Batch>)>,
    ready: BTreeMap<u64, Result<Batch>>,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// A loader over `split` of `dataset`, starting at `state`.
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
        let submit_plan = (state.epoch, sampler.rank_plan(state.epoch));
        let mut loader = Self {
            dataset,
            sampler,
            split,
            state,
            submit_state: state,
            submit_plan,
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

    /// Where the stream stands: save it, and a loader built with it continues exactly here.
    pub fn state(&self) -> SamplerState {
        self.state
    }

    /// The sampler this loader follows.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
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
            if self.submit_plan.0 != self.submit_state.epoch {
                self.submit_plan = (
                    self.submit_state.epoch,
                    self.sampler.rank_plan(self.submit_state.epoch),
                );
            }
            let plan = self.submit_plan.1[self.submit_state.position].clone();
            let job = Job {
                seq: self.next_submit,
                plan,
            };
            if jobs.send(job).is_err() {
                break; // Workers are gone; the error surfaces in next_batch.
            }
            self.next_submit += 1;
            self.submit_state = self.sampler.advance(self.submit_state);
        }
    }

    /// Hands a consumed batch's buffers back for reuse (see [`Dataset::recycle`]).
    pub fn recycle(&self, batch: Batch) {
        self.dataset.recycle(batch);
    }

    /// The next batch in the sampler's order.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let seq = self.next_deliver;
        let result = loop {
            if let Some(result) = self.ready.remove(&seq) {
                break result;
            }
            match self.results.recv() {
                Ok((s, result)) => {
                    self.ready.insert(s, result);
                }
                Err(_) => {
                    return Err(DataError::Config("the prefetch workers stopped".into()));
                }
            }
        };
        self.next_deliver += 1;
        self.state = self.sampler.advance(self.state);
        self.fill();
        result
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
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
    results: &SyncSender<(u64, Result<Batch>)>,
) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.recv()
        };
        let Ok(job) = job else { return };
        let batch = dataset.read_batch(job.plan.session, split, &job.plan.trials);
        if results.send((job.seq, batch)).is_err() {
            return;
        }
    }
}
