//! A small training run for tests, built as a typed [`RunConfig`] (not copied TOML): every
//! test starts from the same tiny run and changes the fields it is about.

use std::path::{Path, PathBuf};

use mtm_dataloader::SynthConfig;
use mtm_trainer::config::RunConfig;

/// A tiny run: out of `dir/run`, on synthetic data generated at `dir/data` on first use.
#[derive(Clone, Debug)]
pub struct TestRun {
    config: RunConfig,
}

impl TestRun {
    /// One synthetic session of 24 units in 3 regions and 120 trials; a model 16 wide with
    /// one layer of 2 heads; 4 steps of 8 trials at lr 1e-3, a metrics record every step;
    /// evaluation in passes of 64 rows.
    pub fn new(dir: &Path) -> Self {
        let text = format!(
            "out_dir = {}\n[data]\nroot = {}\n",
            toml::Value::String(dir.join("run").display().to_string()),
            toml::Value::String(dir.join("data").display().to_string()),
        );
        let mut config = RunConfig::parse(&text, "TestRun", &[]).expect("the minimal run parses");
        config.data.batch_size = 8;
        config.data.synthesize = Some(SynthConfig {
            sessions: 1,
            seed: 2,
            units: (24, 24),
            trials: (120, 120),
            regions: (3, 3),
            ..SynthConfig::default()
        });
        config.model.stitch_dim = 16;
        config.model.hidden = 16;
        config.model.layers = 1;
        config.model.heads = 2;
        config.model.mlp = 32;
        config.train.steps = 4;
        config.train.lr = 1e-3;
        config.train.log_every = 1;
        config.eval.rows_per_pass = 64;
        Self { config }
    }

    /// `n` synthetic sessions (generator seed `seed`) with unit, trial and region counts
    /// drawn from the given inclusive ranges.
    pub fn sessions(
        mut self,
        n: usize,
        seed: u64,
        units: (usize, usize),
        trials: (usize, usize),
        regions: (usize, usize),
    ) -> Self {
        let synth = self
            .config
            .data
            .synthesize
            .get_or_insert_with(SynthConfig::default);
        synth.sessions = n;
        synth.seed = seed;
        synth.units = units;
        synth.trials = trials;
        synth.regions = regions;
        self
    }

    /// A model `width` wide (stitcher and hidden), MLP `2 * width`, with `layers` layers.
    pub fn model(mut self, width: usize, layers: usize) -> Self {
        self.config.model.stitch_dim = width;
        self.config.model.hidden = width;
        self.config.model.mlp = 2 * width;
        self.config.model.layers = layers;
        self
    }

    /// Any other change, on the typed configuration.
    pub fn with(mut self, change: impl FnOnce(&mut RunConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// `--set`-style overrides (`key.path=value`), applied as `mtm train --set` applies
    /// them; for tests about those overrides or that list many changes.
    pub fn set(self, overrides: &[&str]) -> Self {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let config = RunConfig::parse(&self.config.to_toml(), "TestRun", &overrides)
            .unwrap_or_else(|e| panic!("{overrides:?}: {e}"));
        Self { config }
    }

    /// The run's configuration, validated.
    pub fn config(&self) -> RunConfig {
        self.config
            .clone()
            .validated("TestRun")
            .expect("the test run is valid")
    }

    /// Writes the configuration as TOML to `path` (for `mtm --config`) and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.config().to_toml()).expect("the test run's TOML is written");
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_toml_reads_back_as_the_same_run() {
        let dir = Path::new("/tmp/a \"quoted\" dir");
        let run = TestRun::new(dir)
            .sessions(2, 4, (20, 34), (120, 140), (3, 4))
            .model(32, 2)
            .with(|c| c.train.steps = 9);
        let config = run.config();
        assert_eq!(config.out_dir, dir.join("run"));
        assert_eq!(config.model.mlp, 64);
        let back = RunConfig::parse(&config.to_toml(), "back", &[]).unwrap();
        assert_eq!(back, config);
    }
}
