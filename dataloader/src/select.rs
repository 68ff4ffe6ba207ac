//! Choosing sessions the way IBL users name them: a list of eids (BrainWideBench's
//! `pretrain_recording_ids.txt` / `eval_recording_ids.txt`, or a manifest mtm wrote), or a
//! ONE cache's `sessions.pqt` filtered by project or by tag.
//!
//! ONE keeps tags out of its tables: `OneAlyx.load_cache(tag=...)` downloads a cache
//! restricted to the tag into `{cache}/{tag}/`. A tag here therefore means that folder's
//! `sessions.pqt`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow_array::{Array, StringArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::store::Location;

/// Which sessions of a dataset a run uses; every criterion given must hold (their
/// intersection), in the order of `list` when it is given, else by eid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSelect {
    /// A text file (path or URL) of sessions, one a line: an eid (BrainWideBench's
    /// `pretrain_recording_ids.txt`, `ibl_bwb_eval/data/eval_recording_ids.txt`) or a
    /// session folder `…/{eid}_aligned` (a manifest, such as the `bwb-pretrain.txt` that
    /// `mtm ingest bwb` writes). Blank lines and `#` comments are skipped.
    #[serde(default)]
    pub list: Option<String>,
    /// A ONE cache folder (the one holding `sessions.pqt`, e.g. `~/Downloads/ONE/openalyx`).
    #[serde(default)]
    pub one_cache: Option<PathBuf>,
    /// Keep sessions of any of these projects (the `projects` column of `sessions.pqt`,
    /// comma-separated there; names compared whole, case-sensitively). Needs `one_cache`.
    #[serde(default)]
    pub projects: Vec<String>,
    /// Keep sessions of this ONE tag (e.g. `2022_Q2_IBL_et_al_RepeatedSite`): those in the
    /// tag's cache, `{one_cache}/{tag}/sessions.pqt`, as `load_cache(tag=...)` writes it.
    /// Needs `one_cache`.
    #[serde(default)]
    pub tag: Option<String>,
}

impl SessionSelect {
    /// What is inconsistent in the selection itself (no I/O).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.list.is_none() && self.one_cache.is_none() {
            out.push("data.select needs `list` or `one_cache`".into());
        }
        if self.one_cache.is_none() && (!self.projects.is_empty() || self.tag.is_some()) {
            out.push("data.select.projects and data.select.tag need data.select.one_cache".into());
        }
        out
    }

    /// The selected eids.
    pub fn eids(&self) -> Result<Vec<String>> {
        let listed = self.list.as_deref().map(read_list).transpose()?;
        let from_one = match &self.one_cache {
            None => None,
            Some(cache) => {
                let table = match &self.tag {
                    Some(tag) => cache.join(tag).join("sessions.pqt"),
                    None => cache.join("sessions.pqt"),
                };
                if let (Some(tag), false) = (&self.tag, table.exists()) {
                    return Err(DataError::Inconsistent {
                        url: table.display().to_string(),
                        reason: format!(
                            "no cache for tag {tag} (ONE writes one with `one.load_cache(tag=\"{tag}\")`)"
                        ),
                    });
                }
                Some(one_sessions(&table, &self.projects)?)
            }
        };
        Ok(match (listed, from_one) {
            (Some(list), Some(one)) => list.into_iter().filter(|e| one.contains(e)).collect(),
            (Some(list), None) => list,
            (None, Some(one)) => one.into_iter().collect(),
            (None, None) => Vec::new(),
        })
    }
}

/// The eids of a list file, in order, without repeats.
fn read_list(url: &str) -> Result<Vec<String>> {
    let location = Location::parse(url)?;
    let bytes = crate::store::io_runtime().block_on(location.read())?;
    let text = std::str::from_utf8(&bytes).map_err(|e| DataError::Manifest {
        url: location.url(),
        line: 1,
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let out = listed_eids(text);
    if out.is_empty() {
        return Err(DataError::Manifest {
            url: location.url(),
            line: 1,
            reason: "lists no session".into(),
        });
    }
    Ok(out)
}

/// The eids a list or manifest names, in order, without repeats: an entry is an eid or a
/// session folder `…/{eid}_aligned`.
pub fn listed_eids(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (_, entry) in crate::session::manifest_entries(text) {
        let last = entry
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(entry);
        let eid = last.strip_suffix("_aligned").unwrap_or(last).to_string();
        if seen.insert(eid.clone()) {
            out.push(eid);
        }
    }
    out
}

/// The session ids of a ONE `sessions.pqt` (its `id` column, the pandas index), keeping
/// those of any of `projects` when some are given.
fn one_sessions(table: &Path, projects: &[String]) -> Result<BTreeSet<String>> {
    let url = table.display().to_string();
    let parquet_err = |source| DataError::Parquet {
        url: url.clone(),
        source,
    };
    let file = std::fs::File::open(table).map_err(|e| DataError::Inconsistent {
        url: url.clone(),
        reason: format!("cannot open the ONE sessions table: {e}"),
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    let mut out = BTreeSet::new();
    for batch in reader {
        let batch = batch.map_err(|e| DataError::Inconsistent {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let column = |name: &str| -> Result<Option<StringArray>> {
            let Some(array) = batch.column_by_name(name) else {
                return Ok(None);
            };
            let strings =
                arrow_cast::cast(array, &DataType::Utf8).map_err(|e| DataError::ColumnType {
                    url: url.clone(),
                    column: name.into(),
                    found: array.data_type().to_string(),
                    expected: format!("strings ({e})"),
                })?;
            Ok(strings.as_any().downcast_ref::<StringArray>().cloned())
        };
        let Some(ids) = column("id")? else {
            let old = batch.column_by_name("id_0").is_some();
            return Err(DataError::MissingColumn {
                url: url.clone(),
                column: if old {
                    "id (this table stores ids as id_0/id_1 integers, ONE < 2.0: rebuild the cache with ONE 2 or later)".into()
                } else {
                    "id".into()
                },
            });
        };
        let project_column = if projects.is_empty() {
            None
        } else {
            Some(column("projects")?.ok_or_else(|| DataError::MissingColumn {
                url: url.clone(),
                column: "projects".into(),
            })?)
        };
        for row in 0..ids.len() {
            if ids.is_null(row) {
                continue;
            }
            if let Some(p) = &project_column {
                let of_row = if p.is_null(row) { "" } else { p.value(row) };
                if !of_row
                    .split(',')
                    .any(|x| projects.iter().any(|w| w == x.trim()))
                {
                    continue;
                }
            }
            out.insert(ids.value(row).to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines_are_eids_or_session_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(
            &path,
            "# BWB\nb-eid\n\na-eid_aligned   # a manifest line\ns3://x/y/c-eid_aligned/\nb-eid\n",
        )
        .unwrap();
        assert_eq!(
            read_list(path.to_str().unwrap()).unwrap(),
            ["b-eid", "a-eid", "c-eid"]
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        let err = read_list(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("lists no session"), "{err}");
    }

    #[test]
    fn a_selection_needs_a_source() {
        assert_eq!(SessionSelect::default().problems().len(), 1);
        let only_projects = SessionSelect {
            projects: vec!["p".into()],
            list: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(only_projects.problems().len(), 1);
    }
}
