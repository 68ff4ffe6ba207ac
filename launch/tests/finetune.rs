//! `mtm export` and `mtm finetune` as users run them: an export re-implemented in NumPy,
//! an export read back by mtm, fine-tuning from a checkpoint onto held-out sessions, and
//! the bad inputs (another architecture, a pretraining session held out, a missing path).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mtm_trainer::model::Positions;

fn mtm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtm"))
        .args(args)
        .env("MTM_LOG", "warn")
        .output()
        .expect("mtm runs")
}

fn ok(args: &[&str]) -> Output {
    let o = mtm(args);
    assert!(
        o.status.success(),
        "mtm {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn failure(args: &[&str]) -> String {
    let o = mtm(args);
    assert!(!o.status.success(), "mtm {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Three small synthetic sessions; a tiny model trained a few steps on the first two.
fn config(dir: &Path, positions: Positions) -> PathBuf {
    mtm_tests::TestRun::new(dir)
        .sessions(3, 8, (18, 26), (100, 120), (2, 3))
        .model(16, 2)
        .with(|c| {
            c.out_dir = dir.join("pretrain");
            c.seed = 1;
            c.model.positions = positions;
            c.train.lr = 2e-3;
            c.eval.after_training = false;
            c.eval.heldout_group = 8;
        })
        .write(&dir.join("run.toml"))
}

fn pretrain(dir: &Path, positions: Positions) -> (String, Vec<String>) {
    let config = config(dir, positions);
    let config = config.to_str().unwrap().to_string();
    // Generate the data first to learn the eids, then train on the first two sessions.
    ok(&[
        "train",
        "--config",
        &config,
        "--set",
        "train.steps=1",
        "--set",
        &format!("out_dir={}", dir.join("scratchpad").display()),
        "--no-eval",
    ]);
    let eids = mtm_tests::local_eids(&dir.join("data"));
    ok(&[
        "train",
        "--config",
        &config,
        "--set",
        &format!("data.sessions=[\"{}\", \"{}\"]", eids[0], eids[1]),
    ]);
    (config, eids)
}

fn export_round_trip(positions: Positions) {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = pretrain(dir.path(), positions);
    let run = dir.path().join("pretrain");
    let export = dir.path().join("export");
    // A report beside the checkpoint goes into the model card.
    ok(&[
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--tasks",
        "co-smooth",
        "--no-baseline",
        "--out",
        run.join("eval-test.json").to_str().unwrap(),
    ]);
    let out = ok(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "model.safetensors",
        "config.json",
        "MODEL_CARD.md",
        "reference.safetensors",
    ] {
        assert!(export.join(file).is_file(), "{file} missing");
    }
    let card = std::fs::read_to_string(export.join("MODEL_CARD.md")).unwrap();
    assert!(card.contains("\n- co-smooth: "), "{card}");
    let names = mtm_tests::safetensors_bytes(&export.join("model.safetensors"));
    assert!(
        names.contains_key("layers.1.attn.qkv.weight"),
        "{:?}",
        names.keys()
    );
    assert!(names.contains_key("sessions.1.stitcher.weight"));
    assert!(
        !names
            .keys()
            .any(|n| n.contains("gamma") || n.contains("blocks"))
    );

    // NumPy alone reproduces mtm's forward pass from the export.
    let scorer = mtm_tests::run_python("export_forward.py", &[export.to_str().unwrap(), "1e-4"]);
    assert!(scorer.contains("checked 3 forward passes"), "{scorer}");

    // mtm reads the export back: the same predictions as from the checkpoint, bit for bit.
    let predict = |from: &Path, to: &Path| {
        ok(&[
            "eval",
            "--checkpoint",
            from.to_str().unwrap(),
            "--tasks",
            "co-smooth,forward",
            "--save-predictions",
            to.to_str().unwrap(),
            "--out",
            to.with_extension("json").to_str().unwrap(),
        ]);
    };
    let (a, b) = (dir.path().join("pred-ckpt"), dir.path().join("pred-export"));
    predict(&run, &a);
    predict(&export, &b);
    let files: Vec<PathBuf> = mtm_tests::walk(&a);
    assert!(!files.is_empty());
    for file in files {
        let twin = b.join(file.strip_prefix(&a).unwrap());
        assert_eq!(
            mtm_tests::safetensors_bytes(&file),
            mtm_tests::safetensors_bytes(&twin),
            "{} differs after export",
            file.display()
        );
    }

    // An existing, non-empty folder is never overwritten.
    let err = failure(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(err.contains("not empty"), "{err}");

    // Half-precision weights: f16 still runs in NumPy, less exactly; bf16 (which NumPy
    // cannot read) is read back by mtm.
    for (dtype, want) in [
        ("f16", safetensors::Dtype::F16),
        ("bf16", safetensors::Dtype::BF16),
    ] {
        let half = dir.path().join(format!("export-{dtype}"));
        ok(&[
            "export",
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            half.to_str().unwrap(),
            "--dtype",
            dtype,
        ]);
        let bytes = std::fs::read(half.join("model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(file.tensors().iter().all(|(_, v)| v.dtype() == want));
        if dtype == "f16" {
            let scorer =
                mtm_tests::run_python("export_forward.py", &[half.to_str().unwrap(), "0.05"]);
            assert!(scorer.contains("checked 3 forward passes"), "{scorer}");
        } else {
            predict(&half, &dir.path().join("pred-bf16"));
        }
    }
}

#[test]
fn an_export_runs_in_numpy_and_reads_back_identically() {
    export_round_trip(Positions::Learned);
}

#[test]
fn a_rotary_export_runs_in_numpy() {
    export_round_trip(Positions::Rotary);
}

#[test]
fn finetuning_starts_held_out_sessions_from_the_pretrained_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (config, eids) = pretrain(dir.path(), Positions::Learned);
    let pretrained = dir.path().join("pretrain");
    let out = dir.path().join("finetune");
    let set_out = format!("out_dir={}", out.display());
    let held_out = format!("data.sessions=[\"{}\"]", eids[2]);
    let o = ok(&[
        "finetune",
        "--config",
        &config,
        "--checkpoint",
        pretrained.to_str().unwrap(),
        "--set",
        &set_out,
        "--set",
        &held_out,
        "--set",
        "finetune.freeze_backbone=true",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&eids[2]), "{stdout}");
    assert!(
        stdout.contains("co-smooth") && stdout.contains("whisker"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("finetune-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["report"]["sessions"].as_array().unwrap().len(), 1);
    let load = &report["loads"][0]["load"];
    let names = |key: &str| -> Vec<String> {
        load[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("loaded").contains(&"blocks.1.qkv.weight".to_string()));
    assert!(names("loaded").contains(&"prompt_tokens".to_string()));
    let mut created = names("created");
    created.sort();
    assert_eq!(
        created,
        [
            "heads.0.bias",
            "heads.0.weight",
            "session_tokens",
            "stitchers.0.bias",
            "stitchers.0.weight"
        ]
    );
    assert!(names("ignored").contains(&"stitchers.1.weight".to_string()));

    // With the backbone frozen, the fine-tuned model's shared weights are the pretrained
    // ones, bit for bit, while its new stitcher trained.
    let before = mtm_tests::safetensors_bytes(
        &pretrained.join("checkpoints/step-00000004/model.safetensors"),
    );
    let after = mtm_tests::safetensors_bytes(
        &out.join(&eids[2])
            .join("checkpoints/step-00000004/model.safetensors"),
    );
    for shared in ["blocks.0.qkv.weight", "embed_out.weight", "prompt_tokens"] {
        assert_eq!(before[shared], after[shared], "{shared} changed");
    }
    assert_ne!(before["stitchers.0.bias"], after["stitchers.0.bias"]);

    // A second fine-tuning into the same folder refuses.
    let err = failure(&[
        "finetune",
        "--config",
        &config,
        "--scratch",
        "--set",
        &set_out,
        "--set",
        &held_out,
    ]);
    assert!(err.contains("already holds"), "{err}");

    // From scratch: the same command without a checkpoint.
    let scratch = dir.path().join("scratch");
    let o = ok(&[
        "finetune",
        "--config",
        &config,
        "--set",
        &format!("out_dir={}", scratch.display()),
        "--set",
        &held_out,
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained from scratch"));
}

#[test]
fn bad_finetuning_inputs_are_explained_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (config, eids) = pretrain(dir.path(), Positions::Learned);
    let pretrained = dir.path().join("pretrain");
    let out = dir.path().join("finetune");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "finetune",
            "--config",
            &config,
            "--checkpoint",
            pretrained.to_str().unwrap(),
            "--set",
            &format!("out_dir={}", out.display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| failure(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let err = run(base(&[
        "--set",
        &format!("data.sessions=[\"{}\"]", eids[0]),
    ]));
    assert!(
        err.contains(&eids[0]) && err.contains("pretraining"),
        "{err}"
    );

    let err = run(base(&[
        "--set",
        &format!("data.sessions=[\"{}\"]", eids[2]),
        "--set",
        "model.hidden=32",
    ]));
    assert!(
        err.contains("another architecture") && err.contains("model.hidden"),
        "{err}"
    );

    let mut missing = base(&["--set", &format!("data.sessions=[\"{}\"]", eids[2])]);
    missing[4] = dir.path().join("nowhere").display().to_string();
    let err = run(missing);
    assert!(err.contains("nowhere"), "{err}");

    assert!(
        !out.exists(),
        "a failed fine-tuning wrote {}",
        out.display()
    );
}
