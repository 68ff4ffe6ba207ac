//! Slurm: the resources a run asks for, the batch script that asks for them, and the check
//! at start-up that the allocation is what the configuration expects.

use serde::{Deserialize, Serialize};

/// How a job is started inside the allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Starter {
    /// `srun --mpi=pmix` (Slurm starts the ranks; needs Slurm built with PMIx).
    Srun,
    /// Open MPI's `mpirun`, which reads the allocation from Slurm itself.
    Mpirun,
}

impl Starter {
    /// How it starts the ranks, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Starter::Srun => "srun --mpi=pmix",
            Starter::Mpirun => "mpirun",
        }
    }
}

/// The variable Slurm sets to the task's index in a job array.
pub const ARRAY_TASK_ID_VAR: &str = "SLURM_ARRAY_TASK_ID";

/// Submits the job script at `script` with `sbatch`; returns what sbatch printed (the job
/// id).
pub fn submit(script: &std::path::Path) -> Result<String, crate::CollectiveError> {
    let failed = |message: String| crate::CollectiveError::Submit {
        script: script.to_path_buf(),
        message,
    };
    let output = std::process::Command::new("sbatch")
        .arg(script)
        .output()
        .map_err(|e| {
            failed(format!(
                "cannot run sbatch ({e}): is this a Slurm login node?"
            ))
        })?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The resources of a Slurm job (the `[slurm]` table of a run configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmRequest {
    /// Nodes (`--nodes`).
    pub nodes: usize,
    /// Ranks per node (`--ntasks-per-node`); with GPUs, one per GPU.
    pub tasks_per_node: usize,
    /// GPUs per node (`--gpus-per-node`); 0 for CPU jobs.
    pub gpus_per_node: usize,
    /// CPU cores per rank (`--cpus-per-task`); each rank's compute threads.
    pub cpus_per_task: usize,
    /// Wall-clock limit (`--time`), e.g. `"24:00:00"`.
    pub time: String,
    /// Partition (`--partition`); empty = the cluster's default.
    pub partition: String,
    /// Account (`--account`); empty = the user's default.
    pub account: String,
    /// Seconds before the time limit at which Slurm sends SIGUSR1 (`--signal`), so the run
    /// checkpoints and exits cleanly.
    pub signal_seconds: u64,
    /// Requeue the job (`scontrol requeue`) after a preemption or time-limit checkpoint,
    /// so it resumes by itself (`--requeue` in the script).
    pub requeue: bool,
    /// `srun` or `mpirun`.
    pub starter: Starter,
    /// Job name (`--job-name`); empty = from the run folder.
    pub job_name: String,
    /// Extra `#SBATCH` lines, verbatim (e.g. `"--constraint=a100"`).
    pub extra: Vec<String>,
}

impl Default for SlurmRequest {
    fn default() -> Self {
        Self {
            nodes: 1,
            tasks_per_node: 1,
            gpus_per_node: 0,
            cpus_per_task: 1,
            time: "24:00:00".into(),
            partition: String::new(),
            account: String::new(),
            signal_seconds: 300,
            requeue: true,
            starter: Starter::Srun,
            job_name: String::new(),
            extra: Vec::new(),
        }
    }
}

impl SlurmRequest {
    /// Problems with the request itself, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.nodes == 0 || self.tasks_per_node == 0 || self.cpus_per_task == 0 {
            out.push(
                "slurm.nodes, slurm.tasks_per_node and slurm.cpus_per_task must be at least 1"
                    .into(),
            );
        }
        if self.gpus_per_node > 0 && self.tasks_per_node > self.gpus_per_node {
            out.push(format!(
                "slurm.tasks_per_node ({}) exceeds slurm.gpus_per_node ({}): each rank needs a GPU of its own",
                self.tasks_per_node, self.gpus_per_node
            ));
        }
        if self.time.trim().is_empty() {
            out.push("slurm.time must be set, e.g. \"24:00:00\"".into());
        }
        out
    }
}

/// What Slurm allocated to this job, from the environment of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmAllocation {
    /// `SLURM_JOB_ID`.
    pub job_id: String,
    /// `SLURM_JOB_NUM_NODES` (or `SLURM_NNODES`).
    pub nodes: Option<usize>,
    /// `SLURM_NTASKS`.
    pub tasks: Option<usize>,
    /// `SLURM_CPUS_PER_TASK`.
    pub cpus_per_task: Option<usize>,
    /// GPUs on this node (`SLURM_GPUS_ON_NODE`).
    pub gpus_on_node: Option<usize>,
}

impl SlurmAllocation {
    /// The allocation, when this process runs inside a Slurm job.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`SlurmAllocation::from_env`] with `var` as the environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let job_id = var("SLURM_JOB_ID")?;
        let num = |k: &str| var(k).and_then(|v| v.trim().parse::<usize>().ok());
        Some(Self {
            job_id,
            nodes: num("SLURM_JOB_NUM_NODES").or_else(|| num("SLURM_NNODES")),
            tasks: num("SLURM_NTASKS"),
            cpus_per_task: num("SLURM_CPUS_PER_TASK"),
            gpus_on_node: num("SLURM_GPUS_ON_NODE"),
        })
    }

    /// Every way this allocation differs from `want`, as sentences (empty: it fits).
    /// Values Slurm did not export are not checked.
    pub fn mismatches(&self, want: &SlurmRequest) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, got: Option<usize>, expected: usize| {
            if let Some(got) = got
                && got != expected
            {
                out.push(format!(
                    "{what}: the configuration asks for {expected}, Slurm allocated {got}"
                ));
            }
        };
        check("nodes", self.nodes, want.nodes);
        check("tasks", self.tasks, want.nodes * want.tasks_per_node);
        check("cpus per task", self.cpus_per_task, want.cpus_per_task);
        if want.gpus_per_node > 0 {
            check("GPUs on this node", self.gpus_on_node, want.gpus_per_node);
        }
        out
    }
}

/// The `sbatch` script that starts `command` (the `mtm` invocation each rank runs) with the
/// resources of `request`; `workdir` is where the job runs and `log_dir` where Slurm writes
/// its output. A non-empty `array` makes it a job array over those task ids (each task
/// with the whole request; `$SLURM_ARRAY_TASK_ID` in `command` picks its work, and each
/// task logs to its own file).
pub fn sbatch_script(
    request: &SlurmRequest,
    job_name: &str,
    workdir: &str,
    log_dir: &str,
    command: &str,
    array: &[usize],
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut directive = |line: String| {
        s.push_str("#SBATCH ");
        s.push_str(&line);
        s.push('\n');
    };
    directive(format!("--job-name={job_name}"));
    if !array.is_empty() {
        let ids: Vec<String> = array.iter().map(usize::to_string).collect();
        directive(format!("--array={}", ids.join(",")));
    }
    directive(format!("--nodes={}", request.nodes));
    directive(format!("--ntasks-per-node={}", request.tasks_per_node));
    directive(format!("--cpus-per-task={}", request.cpus_per_task));
    if request.gpus_per_node > 0 {
        directive(format!("--gpus-per-node={}", request.gpus_per_node));
    }
    directive(format!("--time={}", request.time));
    if !request.partition.is_empty() {
        directive(format!("--partition={}", request.partition));
    }
    if !request.account.is_empty() {
        directive(format!("--account={}", request.account));
    }
    // B: signal the batch shell, which forwards to the ranks (see the trap below): with a
    // plain --signal only job steps are signalled, and mpirun is not one under Open MPI.
    directive(format!("--signal=B:USR1@{}", request.signal_seconds));
    if request.requeue {
        directive("--requeue".into());
        directive("--open-mode=append".into());
    }
    // %A_%a: the array's job id and the task's index, one log per task.
    let log = if array.is_empty() {
        "%x-%j"
    } else {
        "%x-%A_%a"
    };
    directive(format!("--output={log_dir}/{log}.out"));
    for extra in &request.extra {
        directive(extra.clone());
    }
    s.push_str("\nset -euo pipefail\n");
    s.push_str(&format!("cd {}\n", shell_quote(workdir)));
    s.push_str(&format!(
        "export RAYON_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-{}}}\n",
        request.cpus_per_task
    ));
    if request.requeue {
        s.push_str(&format!("export {REQUEUE_VAR}=1\n"));
    }
    s.push_str(
        "echo \"job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0}\"\n\n",
    );
    let start = match request.starter {
        Starter::Srun => format!("srun --mpi=pmix --kill-on-bad-exit=1 {command}"),
        // --bind-to none: the ranks' own thread pools decide their cores; -x exports the
        // thread count to every rank; Open MPI reads the node list from Slurm.
        Starter::Mpirun => format!(
            "mpirun -np $SLURM_NTASKS --map-by ppr:{}:node --bind-to none -x RAYON_NUM_THREADS{} {command}",
            request.tasks_per_node,
            if request.requeue {
                format!(" -x {REQUEUE_VAR}")
            } else {
                String::new()
            }
        ),
    };
    // The ranks run in the background so that the shell can forward SIGUSR1 to them
    // (a shell defers traps while a foreground child runs).
    s.push_str(&format!("{start} &\nstep=$!\n"));
    s.push_str("trap 'echo \"SIGUSR1: asking the ranks to checkpoint\"; kill -USR1 $step' USR1\n");
    s.push_str("while ! wait $step; do\n  status=$?\n  # wait returns early (>128) when a trapped signal arrives; keep waiting.\n  kill -0 $step 2>/dev/null || exit $status\ndone\n");
    s
}

/// Why a job with `request`'s ranks would fail with this binary: several ranks need the
/// `mpi` feature, which this build lacks. `None` when the job can run.
pub fn unrunnable(request: &SlurmRequest) -> Option<String> {
    let ranks = request.nodes * request.tasks_per_node;
    (ranks > 1 && crate::mpi_library_version().is_none()).then(|| {
        format!(
            "the job starts {ranks} ranks of this mtm, which was built without MPI and would stop on every rank; rebuild it with `cargo build --release --features mpi` (or `--features cuda`)"
        )
    })
}

/// Set by the batch script when the job asks to be requeued after a stop (the `[slurm]`
/// table's `requeue`); read by [`requeue_if_asked`].
pub const REQUEUE_VAR: &str = "MTM_SLURM_REQUEUE";

/// After a run stopped on a signal with a checkpoint: when the batch script asked for it
/// and this is a Slurm job, requeues the job with `scontrol requeue`, so that the same
/// command resumes. Returns what happened, for the log; `None` when not asked.
pub fn requeue_if_asked() -> Option<String> {
    if std::env::var(REQUEUE_VAR).ok()? != "1" {
        return None;
    }
    let job = std::env::var("SLURM_JOB_ID").ok()?;
    Some(
        match std::process::Command::new("scontrol")
            .args(["requeue", &job])
            .status()
        {
            Ok(s) if s.success() => format!("requeued Slurm job {job}"),
            Ok(s) => format!("scontrol requeue {job} failed ({s}); resubmit the job"),
            Err(e) => format!("cannot run scontrol ({e}); resubmit the job"),
        },
    )
}

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_allocation_is_checked_against_the_request() {
        let env: HashMap<&str, &str> = [
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_NUM_NODES", "1"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_CPUS_PER_TASK", "8"),
            ("SLURM_GPUS_ON_NODE", "4"),
        ]
        .into();
        let alloc = SlurmAllocation::from_vars(|k| env.get(k).map(|v| v.to_string())).unwrap();
        let fits = SlurmRequest {
            nodes: 1,
            tasks_per_node: 4,
            gpus_per_node: 4,
            cpus_per_task: 8,
            ..SlurmRequest::default()
        };
        assert!(alloc.mismatches(&fits).is_empty());
        let two_nodes = SlurmRequest {
            nodes: 2,
            ..fits.clone()
        };
        assert_eq!(
            alloc.mismatches(&two_nodes),
            [
                "nodes: the configuration asks for 2, Slurm allocated 1",
                "tasks: the configuration asks for 8, Slurm allocated 4"
            ]
        );
        assert!(SlurmAllocation::from_vars(|_| None).is_none());
    }

    /// The script for a 2-node GPU job and a 1-node CPU job under mpirun, against the
    /// committed snapshots (`UPDATE_SNAPSHOTS=1 cargo test` rewrites them after a reviewed
    /// change).
    #[test]
    fn sbatch_scripts_match_their_snapshots() {
        let gpu = SlurmRequest {
            nodes: 2,
            tasks_per_node: 4,
            gpus_per_node: 4,
            cpus_per_task: 8,
            time: "48:00:00".into(),
            partition: "gpu".into(),
            account: "ibl".into(),
            extra: vec!["--constraint=a100".into()],
            ..SlurmRequest::default()
        };
        let cpu = SlurmRequest {
            nodes: 1,
            tasks_per_node: 16,
            starter: Starter::Mpirun,
            requeue: false,
            signal_seconds: 120,
            time: "02:00:00".into(),
            ..SlurmRequest::default()
        };
        for (name, request) in [("sbatch_gpu_srun", gpu), ("sbatch_cpu_mpirun", cpu)] {
            let script = sbatch_script(
                &request,
                "scaling-s004",
                "/home/me/mtm",
                "/home/me/mtm/runs/s004/launch",
                "/opt/mtm/bin/mtm train --config /home/me/mtm/runs/s004/launch/config.toml",
                &[],
            );
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("snapshots")
                .join(format!("{name}.sbatch"));
            if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &script).unwrap();
            }
            let expected = std::fs::read_to_string(&path).unwrap();
            assert_eq!(script, expected, "{} changed", path.display());
            let syntax = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap();
            assert!(syntax.success(), "{} is not valid bash", path.display());
        }
    }

    #[test]
    fn quoting_leaves_plain_words_alone() {
        assert_eq!(shell_quote("runs/a-b_1.toml"), "runs/a-b_1.toml");
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
        assert_eq!(shell_quote(""), "''");
    }
}
