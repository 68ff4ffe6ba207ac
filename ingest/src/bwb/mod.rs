//! BrainWideBench (BWB) session files, `{eid}.h5`: the `temporaldata` `Data` tree that
//! BWB publishes (the tree, its string encodings and split domains are described in
//! `docs/bwb.md`), read with HDF5 and turned into sessions in the published layout by the
//! same rules as the ALF ingest (`align`).
//!
//! BWB has already merged a session's probes: one spike train, one unit table with the
//! Allen, Beryl and Cosmos region of each unit. Its trials table keeps every trial and
//! re-encodes `choice` (right 0, left 1, none 2); it is mapped back to IBL's -1/+1/0
//! before the filter. Its split (`ts2_*_domain` in eval files, `pretrain_*_domain` in
//! pretraining files) is kept by default; `Splits::Shuffle` uses mtm's seeded 70/10/20
//! shuffle instead.
//!
//! The HDF5 library serialises its calls behind one lock (`hdf5-metno` takes it on every
//! call), so parallel conversions overlap binning and writing, not reading.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};
use mtm_dataloader::Location;
use mtm_dataloader::writer::SessionInfo;
use object_store::ObjectStoreExt;

use crate::align::{self, SpikeTrain, SplitRule, Trace, TrialColumns};
use crate::error::{IngestError, Result};
use crate::{BIN, Converted, IngestOptions, IngestReport, N_BINS, RegionLevel};

pub mod ts2;

/// The dataset's folder name in BWB's bucket.
pub const DATASET: &str = "ibl_brain_wide_bench_2026";

/// Fixed-length strings longer than this are refused (unit UUIDs and region acronyms are
/// far shorter); the reader needs a size at compile time.
const MAX_STRING: usize = 256;

/// Which of BWB's session sets to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The 423 pretraining sessions (`pretrain/`).
    Pretrain,
    /// The 29 held-out evaluation sessions (`eval/`).
    Eval,
}

impl Part {
    fn folder(self) -> &'static str {
        match self {
            Self::Pretrain => "pretrain",
            Self::Eval => "eval",
        }
    }
}

/// Which of BWB's two builds to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Every sorted unit (`all_units/`).
    All,
    /// Units that pass BWB's rate and QC filters (`selected_units/`).
    Selected,
}

impl Build {
    fn folder(self) -> &'static str {
        match self {
            Self::All => "all_units",
            Self::Selected => "selected_units",
        }
    }
}

/// Where trials' train/val/test assignment comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Splits {
    /// The file's own split domains (a trial joins the domain that holds its whole
    /// window); a file without them is shuffled, and says so in its report.
    #[default]
    File,
    /// mtm's seeded 70/10/20 shuffle, ignoring the file's domains.
    Shuffle,
}

/// The session files under `from`: the URL itself when it names an `.h5` file; else the
/// `.h5` files directly in the first of `from`, `from/{part}`, `from/{DATASET}/{part}` and
/// `from/{build}/{DATASET}/{part}` that holds any (so the bucket's root, a build's folder
/// or a folder of files all work), in name order.
pub fn list(from: &str, part: Part, build: Build) -> Result<Vec<Location>> {
    let root = Location::parse(from)?;
    if root.name().ends_with(".h5") {
        return Ok(vec![root]);
    }
    let candidates = [
        root.clone(),
        root.join(part.folder()),
        root.join(&format!("{DATASET}/{}", part.folder())),
        root.join(&format!("{}/{DATASET}/{}", build.folder(), part.folder())),
    ];
    let runtime = mtm_dataloader::store::io_runtime();
    for folder in &candidates {
        let listed = runtime
            .block_on(folder.store.list_with_delimiter(Some(&folder.path)))
            .map_err(|e| IngestError::Fetch {
                url: folder.url(),
                reason: e.to_string(),
            })?;
        let mut files: Vec<Location> = listed
            .objects
            .into_iter()
            .filter(|o| o.location.filename().is_some_and(|n| n.ends_with(".h5")))
            .map(|o| folder.with_path(o.location))
            .collect();
        if !files.is_empty() {
            files.sort_by_key(|l| l.path.to_string());
            return Ok(files);
        }
    }
    Err(IngestError::NoSessions {
        url: from.to_string(),
        looked: candidates
            .iter()
            .map(Location::url)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Converts and writes the session files `sources` under `out`, `jobs` at a time; files in
/// an object store are fetched to a temporary file first (under `$TMPDIR`), since HDF5
/// reads files. `progress` sees each result; a file that fails is reported by name and the
/// others still written.
pub fn ingest(
    sources: &[Location],
    out: &str,
    options: &IngestOptions,
    splits: Splits,
    jobs: usize,
    progress: &(dyn Fn(&Result<IngestReport>) + Sync),
) -> Result<Vec<Result<IngestReport>>> {
    crate::convert_all(
        sources,
        &|source, runtime| {
            let url = source.url();
            match mtm_dataloader::store::local_path(&url) {
                Some(path) => convert_file(&path, &path, options, splits),
                None => {
                    let file = fetch(runtime, source)?;
                    convert_file(file.path(), Path::new(&url), options, splits)
                }
            }
        },
        out,
        options.rows_per_group,
        jobs,
        progress,
    )
}

/// The manifest of one BWB session set under a dataset root: `{out}/bwb-{part}.txt`, one
/// session folder (`{eid}_aligned`) per line. It is a dataset root of its own
/// (`data.root = "…/bwb-pretrain.txt"` trains on exactly those sessions) and a session
/// list for `data.select.list`.
pub fn manifest_name(part: Part) -> String {
    format!("bwb-{}.txt", part.folder())
}

/// Adds `written` (eids) to the manifest of `part` under `out`, keeping the sessions an
/// earlier ingest listed there (a re-run of the files that failed completes it); returns
/// the manifest's location and how many sessions it lists.
pub fn update_manifest(out: &str, part: Part, written: &[String]) -> Result<(Location, usize)> {
    let manifest = Location::parse(out)?.join(&manifest_name(part));
    mtm_dataloader::store::io_runtime().block_on(async {
        let mut eids: std::collections::BTreeSet<String> = written.iter().cloned().collect();
        match manifest.read().await {
            Ok(bytes) => eids.extend(mtm_dataloader::select::listed_eids(
                &String::from_utf8_lossy(&bytes),
            )),
            Err(mtm_dataloader::DataError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut text = format!(
            "# BrainWideBench {} sessions written by `mtm ingest bwb` (one session folder a line)\n",
            part.folder()
        );
        for eid in &eids {
            text.push_str(&format!("{eid}_aligned\n"));
        }
        manifest
            .store
            .put(&manifest.path, text.into_bytes().into())
            .await
            .map_err(|e| IngestError::Fetch {
                url: manifest.url(),
                reason: e.to_string(),
            })?;
        Ok((manifest.clone(), eids.len()))
    })
}

/// Copies an object to a temporary file, streaming.
fn fetch(runtime: &tokio::runtime::Runtime, source: &Location) -> Result<tempfile::NamedTempFile> {
    let fail = |reason: String| IngestError::Fetch {
        url: source.url(),
        reason,
    };
    let mut file = tempfile::Builder::new()
        .prefix(".mtm-bwb-")
        .suffix(".h5")
        .tempfile()
        .map_err(|e| fail(format!("cannot create a temporary file: {e}")))?;
    runtime.block_on(async {
        let got = source
            .store
            .get(&source.path)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fail(e.to_string()))?;
            file.write_all(&chunk)
                .map_err(|e| fail(format!("writing {}: {e}", file.path().display())))?;
        }
        file.flush()
            .map_err(|e| fail(format!("writing {}: {e}", file.path().display())))
    })?;
    Ok(file)
}

/// Strings of a dataset or attribute, in either encoding `temporaldata` writes.
fn strings(c: &hdf5::Container) -> std::result::Result<Vec<String>, String> {
    let descriptor = c
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| e.to_string())?;
    let read = |e: hdf5::Error| e.to_string();
    // The four string types share no trait; each has its own `as_str`.
    macro_rules! texts {
        ($t:ty) => {
            c.read_raw::<$t>()
                .map_err(read)?
                .iter()
                .map(|s| s.as_str().to_string())
                .collect()
        };
    }
    Ok(match descriptor {
        TypeDescriptor::VarLenUnicode => texts!(VarLenUnicode),
        TypeDescriptor::VarLenAscii => texts!(VarLenAscii),
        TypeDescriptor::FixedAscii(n) if n <= MAX_STRING => texts!(FixedAscii<MAX_STRING>),
        TypeDescriptor::FixedUnicode(n) if n <= MAX_STRING => texts!(FixedUnicode<MAX_STRING>),
        other => return Err(format!("expected strings, found {other}")),
    })
}

/// An attribute's value as text (strings, numbers, booleans), or `None` for other types.
fn attr_text(attr: &hdf5::Attribute) -> Option<String> {
    match attr.dtype().and_then(|t| t.to_descriptor()).ok()? {
        TypeDescriptor::Float(_) => attr.read_scalar::<f64>().ok().map(|v| v.to_string()),
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
            attr.read_scalar::<i64>().ok().map(|v| v.to_string())
        }
        TypeDescriptor::Boolean => attr.read_scalar::<bool>().ok().map(|v| v.to_string()),
        _ => strings(attr).ok()?.into_iter().next(),
    }
}

/// One open session file, naming `shown` (its URL or path) in every error.
struct Reader {
    file: hdf5::File,
    shown: PathBuf,
}

impl Reader {
    /// Opens a session file and reads its eid, which must be the file's name.
    fn open(path: &Path, shown: &Path) -> Result<(Self, String)> {
        let file = hdf5::File::open(path).map_err(|e| IngestError::Read {
            path: shown.to_path_buf(),
            reason: format!("not a readable HDF5 file: {e}"),
        })?;
        let r = Reader {
            file,
            shown: shown.to_path_buf(),
        };
        let session = r.group("session")?;
        let eid = r
            .attr_string(&session, "id")?
            .ok_or_else(|| r.err("no attribute /session@id".into()))?;
        let stem = shown
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem != eid {
            return Err(IngestError::Mismatch {
                path: shown.to_path_buf(),
                what: format!("/session@id is {eid}, but the file is named {stem}.h5"),
            });
        }
        Ok((r, eid))
    }

    fn err(&self, reason: String) -> IngestError {
        IngestError::Read {
            path: self.shown.clone(),
            reason,
        }
    }

    fn group(&self, name: &str) -> Result<hdf5::Group> {
        if !self.file.link_exists(name) {
            return Err(self.err(format!(
                "no group /{name} (not a BrainWideBench session file?)"
            )));
        }
        self.file
            .group(name)
            .map_err(|e| self.err(format!("/{name}: {e}")))
    }

    fn optional_group(&self, name: &str) -> Result<Option<hdf5::Group>> {
        match self.file.link_exists(name) {
            true => self.group(name).map(Some),
            false => Ok(None),
        }
    }

    fn dataset(&self, group: &hdf5::Group, name: &str) -> Result<Option<hdf5::Dataset>> {
        if !group.link_exists(name) {
            return Ok(None);
        }
        let ds = group
            .dataset(name)
            .map_err(|e| self.err(format!("{}/{name}: {e}", group.name())))?;
        if ds.ndim() > 1 {
            return Err(self.err(format!(
                "{}/{name}: expected one dimension, found shape {:?}",
                group.name(),
                ds.shape()
            )));
        }
        Ok(Some(ds))
    }

    fn required(&self, group: &hdf5::Group, name: &str) -> Result<hdf5::Dataset> {
        self.dataset(group, name)?
            .ok_or_else(|| self.err(format!("no dataset {}/{name}", group.name())))
    }

    fn numbers<T: hdf5::H5Type>(&self, ds: &hdf5::Dataset) -> Result<Vec<T>> {
        ds.read_raw::<T>()
            .map_err(|e| self.err(format!("{}: {e}", ds.name())))
    }

    fn f64s(&self, group: &hdf5::Group, name: &str) -> Result<Vec<f64>> {
        self.numbers(&self.required(group, name)?)
    }

    fn texts(&self, ds: &hdf5::Dataset) -> Result<Vec<String>> {
        strings(ds).map_err(|e| self.err(format!("{}: {e}", ds.name())))
    }

    fn attr_string(&self, group: &hdf5::Group, name: &str) -> Result<Option<String>> {
        if !group
            .attr_names()
            .is_ok_and(|n| n.iter().any(|a| a == name))
        {
            return Ok(None);
        }
        let attr = group
            .attr(name)
            .map_err(|e| self.err(format!("{}@{name}: {e}", group.name())))?;
        strings(&attr)
            .map(|v| v.into_iter().next())
            .map_err(|e| self.err(format!("{}@{name}: {e}", group.name())))
    }

    /// A `RegularTimeSeries` field: samples at `domain/start[0] + i / sampling_rate`.
    fn regular(&self, group: &str, field: &str) -> Result<Option<Trace>> {
        let Some(g) = self.optional_group(group)? else {
            return Ok(None);
        };
        let Some(values) = self.dataset(&g, field)? else {
            return Ok(None);
        };
        let values: Vec<f64> = self.numbers(&values)?;
        let rate = g
            .attr("sampling_rate")
            .and_then(|a| a.read_scalar::<f64>())
            .map_err(|e| self.err(format!("/{group}@sampling_rate: {e}")))?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(self.err(format!("/{group}@sampling_rate is {rate}")));
        }
        let domain = g
            .group("domain")
            .map_err(|e| self.err(format!("/{group}/domain: {e}")))?;
        let start = *self
            .f64s(&domain, "start")?
            .first()
            .ok_or_else(|| self.err(format!("/{group}/domain/start is empty")))?;
        let times = (0..values.len()).map(|i| start + i as f64 / rate).collect();
        Ok(Some(Trace { times, values }))
    }

    /// An `Interval` group's (start, end) pairs, when the file has it.
    fn domain(&self, name: &str) -> Result<Option<Vec<(f64, f64)>>> {
        let Some(g) = self.optional_group(name)? else {
            return Ok(None);
        };
        let (start, end) = (self.f64s(&g, "start")?, self.f64s(&g, "end")?);
        crate::same_length(
            &self.shown,
            &format!("/{name}/start and /{name}/end lengths differ"),
            start.len(),
            end.len(),
        )?;
        Ok(Some(start.into_iter().zip(end).collect()))
    }
}

/// Reads, filters, bins and splits one BWB session file at `path`; `shown` (its URL, or
/// the path) names it in errors and in the report.
pub fn convert_file(
    path: &Path,
    shown: &Path,
    options: &IngestOptions,
    splits: Splits,
) -> Result<Converted> {
    let start = std::time::Instant::now();
    let (r, eid) = Reader::open(path, shown)?;
    let mut report = IngestReport {
        eid: eid.clone(),
        source: shown.to_path_buf(),
        ..Default::default()
    };

    // Spikes and units.
    let spikes = r.group("spikes")?;
    let times = r.f64s(&spikes, "timestamps")?;
    let unit_index: Vec<i64> = r.numbers(&r.required(&spikes, "unit_index")?)?;
    crate::same_length(
        shown,
        "/spikes/unit_index and /spikes/timestamps lengths differ",
        unit_index.len(),
        times.len(),
    )?;
    crate::check_sorted(shown, "/spikes/timestamps", &times)?;
    report.spikes_read = times.len();
    let units = r.group("units")?;
    let ids = r.texts(&r.required(&units, "id")?)?;
    let n = ids.len();
    let column = |name: &str, len: usize| {
        crate::same_length(
            shown,
            &format!("/units/{name} and /units/id lengths differ"),
            len,
            n,
        )
    };
    let region_column = match options.region_level {
        RegionLevel::Allen => "region_allen",
        RegionLevel::Beryl => "region_beryl",
        RegionLevel::Cosmos => "region_cosmos",
    };
    let regions = r.texts(&r.required(&units, region_column)?)?;
    column(region_column, regions.len())?;
    let good: Vec<i64> = match r.dataset(&units, "label")? {
        Some(ds) => r
            .numbers::<f64>(&ds)?
            .iter()
            .map(|&l| i64::from(l == 1.0))
            .collect(),
        None if options.good_only => return Err(r.err("no dataset /units/label".into())),
        None => {
            report
                .missing
                .push("/units/label (good_clusters written as 0)".into());
            vec![0; n]
        }
    };
    column("label", good.len())?;
    let channels: Vec<i64> = match r.dataset(&units, "channels")? {
        Some(ds) => r.numbers(&ds)?,
        None => vec![-1; n],
    };
    column("channels", channels.len())?;
    let depths: Vec<f64> = match r.dataset(&units, "depths")? {
        Some(ds) => r.numbers(&ds)?,
        None => vec![f64::NAN; n],
    };
    column("depths", depths.len())?;
    let mut counts = vec![0usize; n];
    for (s, &u) in unit_index.iter().enumerate() {
        match usize::try_from(u).ok().filter(|&u| u < n) {
            Some(u) => counts[u] += 1,
            None => {
                return Err(IngestError::Mismatch {
                    path: shown.to_path_buf(),
                    what: format!(
                        "spike {s} has /spikes/unit_index {u}, outside the {n} units of /units"
                    ),
                });
            }
        }
    }
    let duration = match (times.first(), times.last()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => 1.0,
    };
    let mut keep = vec![None; n];
    let mut info = SessionInfo {
        eid: eid.clone(),
        probe_name: String::new(),
        subject: String::new(),
        lab: r.attr_string(&r.file, "lab")?.unwrap_or_default(),
        sampling_freq: 30_000.0,
        binsize: BIN,
        interval_len: (N_BINS as f64 * BIN).round() as i64,
        regions: Vec::new(),
        channels: Vec::new(),
        depths: Vec::new(),
        good: Vec::new(),
        uuids: Vec::new(),
        metadata: Vec::new(),
    };
    for u in 0..n {
        let rate = counts[u] as f64 / duration;
        if (options.good_only && good[u] != 1) || options.min_rate_hz.is_some_and(|m| rate < m) {
            continue;
        }
        keep[u] = Some(info.regions.len() as u32);
        info.regions.push(regions[u].clone());
        info.channels.push(channels[u]);
        info.depths.push(depths[u]);
        info.good.push(good[u]);
        info.uuids.push(ids[u].clone());
    }
    report.units = (n, info.regions.len());
    if let Some(probes) = r.optional_group("probes")?
        && let Some(names) = r.dataset(&probes, "name")?
    {
        report.probes = r.texts(&names)?;
    }
    info.probe_name = report.probes.join(",");
    if let Some(subject) = r.optional_group("subject")? {
        info.subject = r.attr_string(&subject, "id")?.unwrap_or_default();
    }

    // Trials, mapped back to IBL's conventions.
    let trials = r.group("trials")?;
    let stim_on = r.f64s(&trials, "stim_on_time")?;
    let columns = [
        (
            "movement_onset_time",
            r.f64s(&trials, "movement_onset_time")?,
        ),
        ("choice", r.f64s(&trials, "choice")?),
        ("feedback_type", r.f64s(&trials, "feedback_type")?),
        ("probability_left", r.f64s(&trials, "probability_left")?),
    ];
    for (name, values) in &columns {
        crate::same_length(
            shown,
            &format!("/trials/{name} and /trials/stim_on_time lengths differ"),
            values.len(),
            stim_on.len(),
        )?;
    }
    let [(_, movement), (_, bwb_choice), (_, feedback), (_, block)] = columns;
    let choice = bwb_choice
        .iter()
        .enumerate()
        .map(|(k, &c)| match c {
            0.0 => Ok(-1.0),
            1.0 => Ok(1.0),
            2.0 => Ok(0.0),
            c if c.is_nan() => Ok(f64::NAN),
            c => Err(IngestError::Read {
                path: shown.to_path_buf(),
                reason: format!(
                    "/trials/choice[{k}] is {c}; BWB codes choices as 0 (right), 1 (left), 2 (none)"
                ),
            }),
        })
        .collect::<Result<Vec<f64>>>()?;
    let mut also_finite = Vec::new();
    for name in ["go_cue_time", "feedback_time"] {
        if let Some(ds) = r.dataset(&trials, name)? {
            let values: Vec<f64> = r.numbers(&ds)?;
            crate::same_length(
                shown,
                &format!("/trials/{name} and /trials/stim_on_time lengths differ"),
                values.len(),
                stim_on.len(),
            )?;
            also_finite.push(values);
        }
    }

    // Behaviour.
    let whisker = r.regular("whisker", "whisker_motion_energy")?;
    if whisker.is_none() {
        report
            .missing
            .push("/whisker (whisker-motion-energy written as NaN)".into());
    }
    let wheel = r.regular("wheel", "wheel_speed")?.map(|t| Trace {
        values: t.values.into_iter().map(f64::abs).collect(),
        times: t.times,
    });
    if wheel.is_none() {
        report.missing.push("/wheel (wheel-speed left out)".into());
    }

    // The split.
    let domains = match splits {
        Splits::Shuffle => None,
        Splits::File => {
            let sets = [
                ["ts2_train_domain", "ts2_val_domain", "ts2_test_domain"],
                ["pretrain_train_domain", "pretrain_val_domain", ""],
            ];
            let mut found = None;
            for names in sets {
                if r.file.link_exists(names[0]) {
                    let mut d: [Vec<(f64, f64)>; 3] = Default::default();
                    for (slot, name) in d.iter_mut().zip(names) {
                        if !name.is_empty() {
                            *slot = r.domain(name)?.unwrap_or_default();
                        }
                    }
                    found = Some(d);
                    break;
                }
            }
            if found.is_none() {
                report
                    .missing
                    .push("split domains (trials split by mtm's seeded 70/10/20 shuffle)".into());
            }
            found
        }
    };
    let split = match &domains {
        Some(d) => SplitRule::Domains(d),
        None => SplitRule::Shuffle {
            seed: options.seed,
            eid: &eid,
        },
    };
    let table = TrialColumns {
        stim_on: &stim_on,
        movement: &movement,
        choice: &choice,
        feedback: &feedback,
        block: &block,
        also_finite: also_finite.iter().map(Vec::as_slice).collect(),
    };
    let train = SpikeTrain {
        times: &times,
        units: &unit_index,
        keep: &keep,
    };
    let n_units = info.regions.len();
    let trials = align::align(
        shown,
        &table,
        &[train],
        n_units,
        whisker.as_ref(),
        wheel.as_ref(),
        split,
        &mut report,
    )?;

    // Provenance: every attribute of /brainset and /provenance.
    info.metadata.push((
        "bwb.file".into(),
        shown
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    ));
    for group in ["brainset", "provenance"] {
        let Some(g) = r.optional_group(group)? else {
            continue;
        };
        let mut names = g.attr_names().unwrap_or_default();
        names.sort();
        for name in names.into_iter().filter(|n| n != "object") {
            if let Some(value) = g.attr(&name).ok().as_ref().and_then(attr_text) {
                info.metadata.push((format!("bwb.{group}.{name}"), value));
            }
        }
    }
    report.convert_seconds = start.elapsed().as_secs_f64();
    Ok(Converted {
        info,
        trials,
        report,
    })
}
