//! What BrainWideBench's suite TS2 reads from an evaluation session file: the spike train,
//! unit ids, the test hold-out column, the task-aligned intervals and the test domain, and
//! the build's labels that a submission is stamped with. The protocol itself (windows,
//! hold-out rule, scoring) is `mtm_trainer::ts2`; this module only reads.

use std::path::Path;

use mtm_dataloader::Location;

use super::Reader;
use crate::error::{IngestError, Result};

/// The arrays of one evaluation file that TS2 needs.
#[derive(Clone, Debug)]
pub struct Ts2File {
    /// `/session@id`.
    pub eid: String,
    /// `/units/id`, in file order.
    pub unit_ids: Vec<String>,
    /// `/units/ts2_co_smoothing_is_held_out_test`, when the build wrote it (the selected
    /// build of evaluation sessions does).
    pub held_out_test: Option<Vec<bool>>,
    /// `/spikes/timestamps`, sorted.
    pub times: Vec<f64>,
    /// `/spikes/unit_index`.
    pub units: Vec<u32>,
    /// `/task_aligned_intervals/domain`.
    pub task_domain: Vec<(f64, f64)>,
    /// `/ts2_test_domain`.
    pub test_domain: Vec<(f64, f64)>,
    /// `/brainset@unit_filtering` (`selected_units`, `all_units`, `custom`).
    pub unit_filtering: String,
    /// `/brainset@derived_version`.
    pub dataset_version: String,
}

/// Reads the TS2 arrays of the session file at `path` (`shown` names it in errors).
pub fn read(path: &Path, shown: &Path) -> Result<Ts2File> {
    let (r, eid) = Reader::open(path, shown)?;
    let spikes = r.group("spikes")?;
    let times = r.f64s(&spikes, "timestamps")?;
    let index: Vec<i64> = r.numbers(&r.required(&spikes, "unit_index")?)?;
    crate::same_length(
        shown,
        "/spikes/unit_index and /spikes/timestamps lengths differ",
        index.len(),
        times.len(),
    )?;
    crate::check_sorted(shown, "/spikes/timestamps", &times)?;
    let units_group = r.group("units")?;
    let unit_ids = r.texts(&r.required(&units_group, "id")?)?;
    let n = unit_ids.len();
    let units = index
        .iter()
        .enumerate()
        .map(|(s, &u)| {
            u32::try_from(u)
                .ok()
                .filter(|&u| (u as usize) < n)
                .ok_or_else(|| IngestError::Mismatch {
                    path: shown.to_path_buf(),
                    what: format!(
                        "spike {s} has /spikes/unit_index {u}, outside the {n} units of /units"
                    ),
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    let held_out_test = match r.dataset(&units_group, "ts2_co_smoothing_is_held_out_test")? {
        Some(ds) => {
            let mask: Vec<bool> = r.numbers(&ds)?;
            crate::same_length(
                shown,
                "/units/ts2_co_smoothing_is_held_out_test and /units/id lengths differ",
                mask.len(),
                n,
            )?;
            Some(mask)
        }
        None => None,
    };
    // Asked in two steps: HDF5 fails, rather than answers no, for a link under a missing group.
    let task_domain = match r.file.link_exists("task_aligned_intervals") {
        true => r.domain("task_aligned_intervals/domain")?,
        false => None,
    }
    .ok_or_else(|| {
        r.err("no /task_aligned_intervals/domain, which TS2 draws its windows from".into())
    })?;
    let test_domain = r.domain("ts2_test_domain")?.ok_or_else(|| {
        r.err("no /ts2_test_domain: TS2 scores BWB's evaluation sessions only".into())
    })?;
    let (unit_filtering, dataset_version) = match r.optional_group("brainset")? {
        Some(g) => (
            r.attr_string(&g, "unit_filtering")?.unwrap_or_default(),
            r.attr_string(&g, "derived_version")?.unwrap_or_default(),
        ),
        None => Default::default(),
    };
    Ok(Ts2File {
        eid,
        unit_ids,
        held_out_test,
        times,
        units,
        task_domain,
        test_domain,
        unit_filtering,
        dataset_version,
    })
}

/// Reads the TS2 arrays of a session file on disk or in an object store (fetched to a
/// temporary file first, since HDF5 reads files).
pub fn read_location(source: &Location) -> Result<Ts2File> {
    let url = source.url();
    match mtm_dataloader::store::local_path(&url) {
        Some(path) => read(&path, &path),
        None => {
            let file = super::fetch(&mtm_dataloader::store::io_runtime(), source)?;
            read(file.path(), Path::new(&url))
        }
    }
}
