//! Baseline scores kept on disk and reused (`eval.baseline_cache`).
//!
//! The smoothing + GLM baseline (see [`crate::baseline`]) is a function of a session's data
//! and the task's scored entries alone, never of the model. A scaling sweep evaluates the
//! same sessions in every cell (the held-out sessions after each fine-tuning, the first n
//! pretraining sessions after each pretraining), and fitting the baseline's per-unit GLMs
//! again each time cost as much as the model's own evaluation. Each score is kept in one
//! small JSON file that names what it was computed from; an entry is used only when every
//! field of that key matches, so a changed dataset or option computes the baseline anew.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mtm_dataloader::dataset::{Batch, Dataset};
use mtm_dataloader::session::{Session, Split};

use crate::config::Task;
use crate::error::{Result, TrainError};
use crate::eval::EvalOptions;
use crate::report::Reference;

/// Bumped whenever [`crate::baseline`] changes what it computes: older entries then no
/// longer match.
const BASELINE_VERSION: u32 = 1;

/// Everything a baseline score depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineKey {
    /// [`BASELINE_VERSION`] when the score was computed.
    pub version: u32,
    /// The dataset's location.
    pub dataset: String,
    /// The session.
    pub eid: String,
    /// The split scored.
    pub split: String,
    /// The task.
    pub task: Task,
    /// Units held out together (leave-out tasks).
    pub heldout_group: usize,
    /// Fraction of bins forward prediction predicts.
    pub forward_fraction: f64,
    /// The session's units.
    pub n_units: usize,
    /// Trials in the training, validation and test splits (what the GLM is fit on and
    /// scored on).
    pub trials: [usize; 3],
    /// Total spikes of the scored split: a changed file under the same name shows here.
    pub spikes: f64,
}

impl BaselineKey {
    /// The key of `session`'s evaluation under `options` (its task set to the first of
    /// `options.tasks`; [`crate::eval`] sets each task's), `scored` being the trials of the
    /// evaluated split.
    pub fn of(dataset: &Dataset, session: &Session, options: &EvalOptions, scored: &Batch) -> Self {
        Self {
            version: BASELINE_VERSION,
            dataset: dataset.root.clone(),
            eid: session.eid.clone(),
            split: options.split.name().to_string(),
            task: options.tasks.first().copied().unwrap_or(Task::CoSmooth),
            heldout_group: options.heldout_group,
            forward_fraction: options.forward_fraction,
            n_units: session.n_units,
            trials: Split::ALL.map(|split| session.trials(split)),
            spikes: scored.spikes.iter().map(|&c| f64::from(c)).sum(),
        }
    }
}

/// One kept score with the key it was computed from.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: BaselineKey,
    score: Reference,
}

/// A folder of kept baseline scores.
#[derive(Clone, Debug)]
pub struct BaselineCache {
    dir: PathBuf,
}

impl BaselineCache {
    /// The cache in `dir` (created on the first [`BaselineCache::put`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &BaselineKey) -> PathBuf {
        // A name stable across processes and builds: the start of the key's SHA-256.
        let text = serde_json::to_string(key).expect("a key serialises");
        let digest = Sha256::digest(text.as_bytes());
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!(
            "{}-{}-{}-{hash}.json",
            key.eid,
            key.split,
            key.task.name()
        ))
    }

    /// The kept score for `key`, if there is one computed from exactly that key.
    pub fn get(&self, key: &BaselineKey) -> Result<Option<Reference>> {
        let path = self.path(key);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TrainError::io(&path)(e)),
        };
        // An unreadable entry (a file cut short by a crash elsewhere) is computed anew.
        Ok(serde_json::from_str::<Entry>(&text)
            .ok()
            .filter(|entry| &entry.key == key)
            .map(|entry| entry.score))
    }

    /// Keeps `score` for `key`: written under a temporary name and renamed, so that a
    /// reader never sees half a file.
    pub fn put(&self, key: &BaselineKey, score: Reference) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(TrainError::io(&self.dir))?;
        let path = self.path(key);
        let entry = Entry {
            key: key.clone(),
            score,
        };
        let text = serde_json::to_string_pretty(&entry).expect("an entry serialises");
        let staged = staging_name(&path);
        std::fs::write(&staged, text).map_err(TrainError::io(&staged))?;
        std::fs::rename(&staged, &path).map_err(TrainError::io(&path))
    }
}

fn staging_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BaselineKey {
        BaselineKey {
            version: BASELINE_VERSION,
            dataset: "data/x".into(),
            eid: "abc".into(),
            split: "test".into(),
            task: Task::CoSmooth,
            heldout_group: 1,
            forward_fraction: 0.1,
            n_units: 40,
            trials: [70, 10, 20],
            spikes: 1234.0,
        }
    }

    fn score(v: f64) -> Reference {
        Reference {
            bps_per_unit_mean: Some(v),
            bps_pooled_nlb: Some(v / 2.0),
        }
    }

    #[test]
    fn a_kept_score_comes_back_for_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path().join("cache"));
        assert_eq!(cache.get(&key()).unwrap(), None);
        cache.put(&key(), score(0.25)).unwrap();
        assert_eq!(cache.get(&key()).unwrap(), Some(score(0.25)));
        // Another process (a new cache on the same folder) finds it too.
        assert_eq!(
            BaselineCache::new(dir.path().join("cache"))
                .get(&key())
                .unwrap(),
            Some(score(0.25))
        );
        for changed in [
            BaselineKey {
                spikes: 1235.0,
                ..key()
            },
            BaselineKey {
                task: Task::Intra,
                ..key()
            },
            BaselineKey {
                heldout_group: 8,
                ..key()
            },
            BaselineKey {
                trials: [71, 10, 20],
                ..key()
            },
            BaselineKey {
                version: BASELINE_VERSION + 1,
                ..key()
            },
        ] {
            assert_eq!(cache.get(&changed).unwrap(), None, "{changed:?}");
        }
        // No staging file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with(".json"), "{names:?}");
    }

    #[test]
    fn a_kept_score_comes_back_bit_for_bit() {
        // A value the default JSON float parser reads back one ulp off (seen in a sweep:
        // 0.9206158538037701 came back as 0.92061585380377); the workspace enables
        // serde_json's exact `float_roundtrip` parsing.
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path());
        let kept = Reference {
            bps_per_unit_mean: Some(0.6102338213943446),
            bps_pooled_nlb: Some(0.9206158538037701),
        };
        cache.put(&key(), kept).unwrap();
        let back = cache.get(&key()).unwrap().unwrap();
        assert_eq!(
            back.bps_pooled_nlb.unwrap().to_bits(),
            0.9206158538037701f64.to_bits()
        );
        assert_eq!(back, kept);
    }

    #[test]
    fn an_entry_for_another_key_under_the_same_name_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path());
        cache.put(&key(), score(0.25)).unwrap();
        // Rewrite the file with another key, as a hash collision would leave it.
        let path = cache.path(&key());
        let other = Entry {
            key: BaselineKey {
                eid: "other".into(),
                ..key()
            },
            score: score(0.5),
        };
        std::fs::write(&path, serde_json::to_string(&other).unwrap()).unwrap();
        assert_eq!(cache.get(&key()).unwrap(), None);
        // A file cut short is computed anew, not an error.
        std::fs::write(&path, "{\"key\":").unwrap();
        assert_eq!(cache.get(&key()).unwrap(), None);
    }
}
