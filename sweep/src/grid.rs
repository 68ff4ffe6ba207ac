//! The sweep configuration, its grid of cells, and each cell's derived settings.

use std::path::{Path, PathBuf};

use mtm_trainer::config::{RunConfig, Task};
use mtm_trainer::masking::{Masking, Mix};
use serde::{Deserialize, Serialize};

use crate::{Result, SweepError, io};

/// A scaling sweep (one TOML file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Folder of the sweep: `cells/{id}/` (each cell's runs), `results.csv`,
    /// `results.parquet`, `fits.json`, plots.
    pub out_dir: PathBuf,
    /// The run configuration every cell starts from (`mtm train` format), relative to the
    /// sweep file. Its `[data]` gives the dataset; sessions come from this file.
    pub base: PathBuf,
    /// The pretraining pool, in order: a cell with n sessions pretrains on the first n.
    pub pretrain_sessions: Vec<String>,
    /// Sessions every cell is fine-tuned and evaluated on (never pretrained on).
    pub held_out: Vec<String>,
    /// What varies.
    pub grid: Grid,
    /// Training budget and batch as functions of the cell.
    pub budget: Budget,
    /// The fine-tuning stage.
    #[serde(default)]
    pub finetune: FinetuneStage,
    /// `--set`-style overrides of the base configuration for every cell, pretraining and
    /// fine-tuning alike, applied before the model size's: a recipe that differs from the
    /// base's without a second base file, e.g. `["train.session_lr_scale=10"]`.
    #[serde(default)]
    pub set: Vec<String>,
    /// Score co-smoothing and forward prediction on each cell's own pretraining sessions
    /// (their test trials), beside the baseline and the ceiling, after pretraining: shows
    /// whether the model learned its pretraining data before asking whether it transfers.
    #[serde(default = "yes")]
    pub score_pretraining: bool,
}

fn yes() -> bool {
    true
}

/// The axes of the grid; cells are every combination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Numbers of pretraining sessions, e.g. `[1, 2, 4, 8]`.
    pub sessions: Vec<usize>,
    /// Masking schemes (`mtm train` names), e.g. `["temporal", "mtm"]`.
    pub masking: Vec<String>,
    /// Seeds; each is a replicate of every other setting.
    #[serde(default = "one_seed")]
    pub seeds: Vec<u64>,
    /// Model sizes: a name and `--set`-style overrides of the base configuration.
    #[serde(default = "base_model")]
    pub models: Vec<ModelSize>,
    /// Add, per model, masking and seed, a cell that fine-tunes from scratch (no
    /// pretraining; `sessions` 0 in its id and row): the reference pretraining must beat.
    #[serde(default)]
    pub from_scratch: bool,
}

fn one_seed() -> Vec<u64> {
    vec![1]
}

fn base_model() -> Vec<ModelSize> {
    vec![ModelSize {
        name: "base".into(),
        set: Vec::new(),
    }]
}

/// One model size of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSize {
    /// Short name used in run ids (letters, digits, `-`).
    pub name: String,
    /// Overrides, e.g. `["model.hidden=256", "model.layers=4"]`.
    #[serde(default)]
    pub set: Vec<String>,
}

/// How a cell's pretraining length is decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetRule {
    /// `steps = clamp(steps_base + steps_per_session * n, min_steps, max_steps)`. Unless
    /// the steps grow in proportion to the data, each session is seen less as `n` grows:
    /// the curve then measures under-training as much as data.
    #[default]
    Steps,
    /// `epochs` passes over each cell's own pretraining trials: the steps grow with the
    /// data, every session is seen as often in every cell.
    Epochs,
    /// Train until the validation loss has not improved for `patience` validations (one
    /// every `validate_every` steps): each cell trained to convergence. The cap on the
    /// steps is the `steps` rule's formula, so that it can grow with the pool: a cap that
    /// is the same for every cell binds first on the largest pools, which are then the
    /// least trained.
    Converge,
}

impl BudgetRule {
    /// Its name in the sweep file and in the results.
    pub fn name(self) -> &'static str {
        match self {
            BudgetRule::Steps => "steps",
            BudgetRule::Epochs => "epochs",
            BudgetRule::Converge => "converge",
        }
    }
}

/// Pretraining length and batch size of a cell with `n` sessions: the length by `rule`,
/// `batch = min(round(batch_base * n^batch_exponent), max_batch)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// How the pretraining length is decided (`steps`, `epochs` or `converge`).
    pub rule: BudgetRule,
    /// Passes over the cell's pretraining trials (rule `epochs`).
    pub epochs: u64,
    /// Validations without a new best before stopping (rule `converge`).
    pub patience: u64,
    /// Steps between validations (rule `converge`).
    pub validate_every: u64,
    /// Steps every cell gets.
    pub steps_base: u64,
    /// Steps added per pretraining session (more data, more steps).
    pub steps_per_session: u64,
    /// Lower bound on pretraining steps.
    pub min_steps: u64,
    /// Upper bound on pretraining steps.
    pub max_steps: u64,
    /// Trials per batch with one session.
    pub batch_base: usize,
    /// How the batch grows with sessions (0: constant; 0.5: with the square root).
    pub batch_exponent: f64,
    /// Upper bound on the batch.
    pub max_batch: usize,
    /// Fine-tuning steps per held-out session.
    pub finetune_steps: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            rule: BudgetRule::Steps,
            epochs: 10,
            patience: 3,
            validate_every: 250,
            steps_base: 0,
            steps_per_session: 500,
            min_steps: 500,
            max_steps: 100_000,
            batch_base: 16,
            batch_exponent: 0.0,
            max_batch: 256,
            finetune_steps: 500,
        }
    }
}

/// The fine-tuning stage of every cell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneStage {
    /// Train only the held-out sessions' new weights.
    pub freeze_backbone: bool,
    /// Overrides of the fine-tuning configuration (e.g. `"train.lr=1e-3"`).
    pub set: Vec<String>,
}

/// One cell of the grid with its derived settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    /// Stable id: `{model}-{masking}-s{sessions:03}-seed{seed}`.
    pub id: String,
    /// Index in the grid's order (the Slurm array index).
    pub index: usize,
    /// Pretraining sessions; 0 fine-tunes from scratch.
    pub sessions: usize,
    /// Masking scheme.
    pub masking: String,
    /// Seed.
    pub seed: u64,
    /// Model size name.
    pub model: String,
    /// Pretraining steps.
    pub steps: u64,
    /// Trials per batch.
    pub batch_size: usize,
}

impl SweepConfig {
    /// Reads and checks a sweep file.
    pub fn load(path: &Path) -> Result<(Self, RunConfig, String)> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let origin = path.display().to_string();
        let bad = |message: String| SweepError::Config {
            origin: origin.clone(),
            message,
        };
        let mut config: SweepConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if config.base.is_relative() {
            config.base = path.parent().unwrap_or(Path::new(".")).join(&config.base);
        }
        let base_text = std::fs::read_to_string(&config.base).map_err(io(&config.base))?;
        let base = RunConfig::parse(&base_text, &config.base.display().to_string(), &[])?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        // Every cell's configuration must parse: errors now, not hours into the sweep.
        for cell in config.cells() {
            if cell.pretrains() {
                config.pretrain_config(&cell, &base_text)?;
            }
            config.finetune_config(&cell, &base_text)?;
        }
        Ok((config, base, base_text))
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let g = &self.grid;
        if g.sessions.is_empty()
            || g.masking.is_empty()
            || g.seeds.is_empty()
            || g.models.is_empty()
        {
            out.push(
                "grid.sessions, grid.masking, grid.seeds and grid.models need a value each".into(),
            );
        }
        if let Some(&n) = g
            .sessions
            .iter()
            .find(|&&n| n == 0 || n > self.pretrain_sessions.len())
        {
            out.push(format!(
                "grid.sessions has {n}, but the pretraining pool holds {} sessions",
                self.pretrain_sessions.len()
            ));
        }
        if self.held_out.is_empty() {
            out.push("held_out needs at least one session".into());
        }
        if let Some(eid) = self
            .held_out
            .iter()
            .find(|e| self.pretrain_sessions.contains(e))
        {
            out.push(format!(
                "{eid} is both held out and in the pretraining pool"
            ));
        }
        for m in &g.models {
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                out.push(format!(
                    "model name `{}` must be letters, digits and -",
                    m.name
                ));
            }
        }
        let b = &self.budget;
        if b.min_steps > b.max_steps || b.batch_base == 0 || b.max_batch == 0 {
            out.push("budget: min_steps <= max_steps, batch_base and max_batch >= 1".into());
        }
        match b.rule {
            BudgetRule::Epochs if b.epochs == 0 => {
                out.push("budget: rule \"epochs\" needs epochs >= 1".into());
            }
            BudgetRule::Converge if b.patience == 0 || b.validate_every == 0 => {
                out.push("budget: rule \"converge\" needs patience and validate_every >= 1".into());
            }
            _ => {}
        }
        out
    }

    /// Every cell, in a fixed order: model, masking, sessions (from scratch first), seed.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        let scratch = self.grid.from_scratch.then_some(0);
        for model in &self.grid.models {
            for masking in &self.grid.masking {
                for &sessions in scratch.iter().chain(&self.grid.sessions) {
                    for &seed in &self.grid.seeds {
                        cells.push(Cell {
                            id: format!("{}-{masking}-s{sessions:03}-seed{seed}", model.name),
                            index: cells.len(),
                            sessions,
                            masking: masking.clone(),
                            seed,
                            model: model.name.clone(),
                            steps: if sessions == 0 {
                                0
                            } else {
                                self.budget.steps(sessions)
                            },
                            batch_size: self.budget.batch(sessions),
                        });
                    }
                }
            }
        }
        cells
    }

    /// The cell's folder.
    pub fn cell_dir(&self, cell: &Cell) -> PathBuf {
        self.out_dir.join("cells").join(&cell.id)
    }

    /// The cell's fine-tuning run folder.
    pub fn finetune_dir(&self, cell: &Cell) -> PathBuf {
        self.cell_dir(cell).join("finetune")
    }

    /// The sweep's overrides, then the cell's model size's.
    fn model_overrides(&self, cell: &Cell) -> Vec<String> {
        let model = self.grid.models.iter().find(|m| m.name == cell.model);
        self.set
            .iter()
            .chain(model.map_or(&[][..], |m| &m.set[..]))
            .cloned()
            .collect()
    }

    /// The cell's pretraining configuration: the base with the sweep's and the model
    /// size's overrides, then the cell's values set as typed fields.
    pub fn pretrain_config(&self, cell: &Cell, base_text: &str) -> Result<RunConfig> {
        let origin = format!("{} (cell {})", self.base.display(), cell.id);
        let mut config = RunConfig::parse(base_text, &origin, &self.model_overrides(cell))?;
        config.out_dir = self.cell_dir(cell).join("pretrain");
        config.data.sessions = self.pretrain_sessions[..cell.sessions].to_vec();
        set_masking(&mut config, cell, &origin)?;
        config.seed = cell.seed;
        config.train.steps = cell.steps;
        match self.budget.rule {
            BudgetRule::Steps => {}
            BudgetRule::Epochs => {
                config.train.steps = 0;
                config.train.epochs = self.budget.epochs;
            }
            BudgetRule::Converge => {
                config.train.early_stop_patience = self.budget.patience;
                config.train.validate_every = self.budget.validate_every;
            }
        }
        config.data.batch_size = cell.batch_size;
        config.eval.baseline_cache = Some(self.baseline_cache(&config));
        config.eval.after_training = self.score_pretraining;
        // Co-smoothing is what MtM trains for, forward prediction what temporal masking
        // does: each scheme is judged on its own sessions by a task it was trained on.
        config.eval.tasks = vec![Task::CoSmooth, Task::Forward];
        Ok(config.validated(&origin)?)
    }

    /// The cell's fine-tuning configuration (held-out sessions, fine-tuning budget): the
    /// base with the sweep's and the model size's overrides, the cell's values, and last `finetune.set`
    /// (which may override any of them).
    pub fn finetune_config(&self, cell: &Cell, base_text: &str) -> Result<RunConfig> {
        let origin = format!("{} (fine-tuning of cell {})", self.base.display(), cell.id);
        let mut config = RunConfig::parse(base_text, &origin, &self.model_overrides(cell))?;
        config.out_dir = self.finetune_dir(cell);
        config.data.sessions = self.held_out.clone();
        set_masking(&mut config, cell, &origin)?;
        config.seed = cell.seed;
        config.train.steps = self.budget.finetune_steps;
        config.finetune.freeze_backbone = self.finetune.freeze_backbone;
        config.eval.baseline_cache = Some(self.baseline_cache(&config));
        if self.finetune.set.is_empty() {
            return Ok(config.validated(&origin)?);
        }
        Ok(RunConfig::parse(
            &config.to_toml(),
            &origin,
            &self.finetune.set,
        )?)
    }

    /// The folder where every cell's evaluations keep the baseline's scores: the base
    /// configuration's `eval.baseline_cache`, else `{out_dir}/baseline-cache`. A session's
    /// baseline depends on its data alone, so each is fit once per sweep instead of once
    /// per cell.
    fn baseline_cache(&self, config: &RunConfig) -> PathBuf {
        config
            .eval
            .baseline_cache
            .clone()
            .unwrap_or_else(|| self.out_dir.join("baseline-cache"))
    }
}

impl Cell {
    /// Whether the cell pretrains (a from-scratch cell only fine-tunes).
    pub fn pretrains(&self) -> bool {
        self.sessions > 0
    }
}

/// Sets the cell's masking scheme on `config`. The base's `masking.mix` weighs MtM's
/// schemes; a cell of one scheme draws no mixture, so it goes back to the default there.
fn set_masking(config: &mut RunConfig, cell: &Cell, origin: &str) -> Result<()> {
    let scheme: Masking = cell.masking.parse().map_err(|message| SweepError::Config {
        origin: origin.to_string(),
        message,
    })?;
    config.masking.scheme = scheme;
    if !scheme.mixes() {
        config.masking.mix = Mix::default();
    }
    Ok(())
}

impl Budget {
    /// Pretraining steps with `n` sessions: the `steps` rule's formula (under `converge`,
    /// the cap), and 0 (the epochs decide) under `epochs`.
    pub fn steps(&self, n: usize) -> u64 {
        match self.rule {
            BudgetRule::Steps | BudgetRule::Converge => (self.steps_base
                + self.steps_per_session * n as u64)
                .clamp(self.min_steps, self.max_steps),
            BudgetRule::Epochs => 0,
        }
    }

    fn formula(&self) -> String {
        format!(
            "clamp({} + {} x sessions, {}, {})",
            self.steps_base, self.steps_per_session, self.min_steps, self.max_steps
        )
    }

    /// The rule in words, for the report.
    pub fn describe(&self) -> String {
        match self.rule {
            BudgetRule::Steps => format!("steps = {}", self.formula()),
            BudgetRule::Epochs => {
                format!("{} epochs over each cell's pretraining trials", self.epochs)
            }
            BudgetRule::Converge => format!(
                "to convergence: stop after {} validations without a new best (one every {} steps), at most {} steps",
                self.patience,
                self.validate_every,
                self.formula()
            ),
        }
    }

    /// Trials per batch with `n` sessions.
    pub fn batch(&self, n: usize) -> usize {
        ((self.batch_base as f64 * (n as f64).powf(self.batch_exponent)).round() as usize)
            .clamp(1, self.max_batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "out_dir = \"x\"\n[data]\nroot = \"data/s\"\n[model]\nhidden = 32\nheads = 2\n";

    fn sweep(dir: &Path) -> PathBuf {
        std::fs::write(dir.join("base.toml"), BASE).unwrap();
        let text = r#"
out_dir = "runs/sweep"
base = "base.toml"
pretrain_sessions = ["a", "b", "c", "d"]
held_out = ["e", "f"]
[grid]
sessions = [1, 2, 4]
masking = ["temporal", "mtm"]
seeds = [1, 2]
[[grid.models]]
name = "small"
set = ["model.hidden=16"]
[budget]
steps_base = 100
steps_per_session = 200
min_steps = 400
max_steps = 800
batch_base = 8
batch_exponent = 0.5
max_batch = 14
finetune_steps = 50
"#;
        let path = dir.join("sweep.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_grid_expands_with_derived_budgets_and_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _, base_text) = SweepConfig::load(&sweep(dir.path())).unwrap();
        let cells = config.cells();
        assert_eq!(cells.len(), 2 * 3 * 2);
        assert_eq!(cells[0].id, "small-temporal-s001-seed1");
        assert_eq!(cells[11].id, "small-mtm-s004-seed2");
        assert_eq!(
            cells.iter().map(|c| c.index).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>()
        );
        // steps: clamp(100 + 200 n, 400, 800); batch: min(round(8 sqrt(n)), 14).
        let by_sessions = |n: usize| cells.iter().find(|c| c.sessions == n).unwrap();
        assert_eq!((by_sessions(1).steps, by_sessions(1).batch_size), (400, 8));
        assert_eq!((by_sessions(2).steps, by_sessions(2).batch_size), (500, 11));
        assert_eq!((by_sessions(4).steps, by_sessions(4).batch_size), (800, 14));
        // The same file gives the same ids.
        let again = SweepConfig::load(&sweep(dir.path())).unwrap().0.cells();
        assert_eq!(cells, again);

        let pre = config.pretrain_config(&cells[3], &base_text).unwrap();
        assert_eq!(pre.data.sessions, ["a", "b"]);
        assert_eq!(pre.model.hidden, 16);
        assert_eq!(pre.train.steps, 500);
        assert_eq!(pre.masking.scheme.name(), "temporal");
        assert!(
            pre.out_dir
                .ends_with("cells/small-temporal-s002-seed2/pretrain")
        );
        let fine = config.finetune_config(&cells[3], &base_text).unwrap();
        assert_eq!(fine.data.sessions, ["e", "f"]);
        assert_eq!(fine.train.steps, 50);
    }

    #[test]
    fn the_sweeps_overrides_reach_every_run_before_the_model_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = sweep(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace(
                "held_out = [\"e\", \"f\"]\n",
                "held_out = [\"e\", \"f\"]\nset = [\"train.session_lr_scale=10\", \"model.hidden=8\"]\n",
            ),
        )
        .unwrap();
        let (config, _, base_text) = SweepConfig::load(&path).unwrap();
        let cell = &config.cells()[3];
        let pre = config.pretrain_config(cell, &base_text).unwrap();
        let fine = config.finetune_config(cell, &base_text).unwrap();
        for run in [&pre, &fine] {
            assert_eq!(run.train.session_lr_scale, 10.0);
            // The model size's own `model.hidden=16` comes after the sweep's 8.
            assert_eq!(run.model.hidden, 16);
        }
        // A bad override is refused when the sweep is loaded, naming the field.
        std::fs::write(
            &path,
            text.replace(
                "held_out = [\"e\", \"f\"]\n",
                "held_out = [\"e\", \"f\"]\nset = [\"train.session_lr_scale=0\"]\n",
            ),
        )
        .unwrap();
        let err = SweepConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("session_lr_scale"), "{err}");
    }

    #[test]
    fn from_scratch_adds_one_cell_per_masking_and_seed_that_only_fine_tunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = sweep(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("seeds = [1, 2]\n", "seeds = [1, 2]\nfrom_scratch = true\n"),
        )
        .unwrap();
        let (config, _, base_text) = SweepConfig::load(&path).unwrap();
        let cells = config.cells();
        assert_eq!(cells.len(), 2 * (1 + 3) * 2);
        let scratch: Vec<&Cell> = cells.iter().filter(|c| !c.pretrains()).collect();
        assert_eq!(scratch.len(), 4);
        assert_eq!(scratch[0].id, "small-temporal-s000-seed1");
        assert!(scratch.iter().all(|c| c.sessions == 0 && c.steps == 0));
        let fine = config.finetune_config(scratch[0], &base_text).unwrap();
        assert_eq!(fine.data.sessions, ["e", "f"]);
        // Pretraining cells score their own sessions unless told not to.
        let pre = config.pretrain_config(&cells[1], &base_text).unwrap();
        assert!(pre.eval.after_training && pre.eval.tasks == [Task::CoSmooth, Task::Forward]);
    }

    #[test]
    fn each_budget_rule_sets_the_documented_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = sweep(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let with = |lines: &str| {
            std::fs::write(
                &path,
                text.replace("[budget]\n", &format!("[budget]\n{lines}\n")),
            )
            .unwrap();
            SweepConfig::load(&path)
        };
        // epochs: the trainer's epochs decide, the same passes over every cell's pool.
        let (config, _, base) = with("rule = \"epochs\"\nepochs = 7").unwrap();
        for cell in config.cells() {
            let pre = config.pretrain_config(&cell, &base).unwrap();
            assert_eq!((pre.train.steps, pre.train.epochs), (0, 7));
            assert_eq!(pre.train.early_stop_patience, 0);
        }
        // converge: stopping on the validation loss, capped by the steps formula, which
        // grows with the pool: clamp(100 + 200 n, 400, 800).
        let (config, _, base) =
            with("rule = \"converge\"\npatience = 4\nvalidate_every = 25").unwrap();
        let caps: Vec<(usize, u64)> = config
            .cells()
            .iter()
            .filter(|c| c.masking == "mtm" && c.seed == 1)
            .map(|c| {
                let pre = config.pretrain_config(c, &base).unwrap();
                assert_eq!(
                    (pre.train.early_stop_patience, pre.train.validate_every),
                    (4, 25)
                );
                (c.sessions, pre.train.steps)
            })
            .collect();
        assert_eq!(caps, [(1, 400), (2, 500), (4, 800)]);
        assert!(
            config
                .budget
                .describe()
                .contains("at most clamp(100 + 200 x sessions, 400, 800) steps"),
            "{}",
            config.budget.describe()
        );
        // A rule without what it needs is explained.
        let err = with("rule = \"converge\"\npatience = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs patience"), "{err}");
        let err = with("rule = \"steady\"").unwrap_err().to_string();
        assert!(err.contains("steady"), "{err}");
    }

    #[test]
    fn the_shipped_sweeps_load() {
        // Every sweep file (a `[grid]` table) in configs/, so a new one is never missed;
        // the run configurations are checked by the trainer crate.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "toml") && text.contains("\n[grid]") {
                let (config, _, _) =
                    SweepConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!config.cells().is_empty(), "{}", path.display());
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        for name in [
            "scaling-quick.toml",
            "scaling-shared.toml",
            "scaling-ibl.toml",
        ] {
            assert!(seen.iter().any(|s| s == name), "{name} not among {seen:?}");
        }
    }

    #[test]
    fn bad_sweeps_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = sweep(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("[1, 2, 4]", "[1, 2, 5]")
                .replace("\"e\", \"f\"", "\"a\""),
        )
        .unwrap();
        let err = SweepConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("grid.sessions has 5"), "{err}");
        assert!(err.contains("a is both held out"), "{err}");
        std::fs::write(
            &path,
            text.replace(
                "masking = [\"temporal\", \"mtm\"]",
                "masking = [\"tmporal\"]",
            ),
        )
        .unwrap();
        let err = SweepConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("tmporal"), "{err}");
    }
}
