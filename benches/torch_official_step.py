"""One training step of the *official* MtM NDT1 (colehurwitz/IBL_foundation_model) on CPU,
built the way its multi-session trainer `src/train_sessions.py` builds it. Not part of CI;
it is the upstream reference next to benches/torch_ndt1_step.py (our op-for-op re-write).

What is timed, per step (same order as `Trainer.train_epoch` in src/trainer/base.py):
  model(batch..., masking_mode=m) -- the official Masker, stitcher, prompt + session tokens,
  5-layer encoder, stitch decoder and the summed masked Poisson NLL (`outputs.loss`, which the
  trainer back-propagates as is, without dividing by n_examples) -> loss.backward() ->
  AdamW.step() -> OneCycleLR.step() -> zero_grad() -> loss.item().
The masking mode m is drawn as the trainer draws it: `random.sample(schemes, 1)` over
['neuron', 'causal', 'intra-region', 'inter-region'] (masker mode "all"), with the masker
ratio set to 0.6 for 'causal' and back to the configured 0.3 otherwise. Each mode is also
timed on its own. Not timed: the data loader (the batch is synthetic, shaped exactly as
make_loader's default collate hands it) and accelerate (a no-op wrapper on one CPU process).

Getting the checkout (the official code is read from it, never copied into this repo):
  git clone https://github.com/colehurwitz/IBL_foundation_model DIR
  # or, from a clone or mirror without a work tree: git -C REPO archive HEAD | tar -x -C DIR
The official modules open relative paths (src/configs/*.yaml, data/target_eids.txt at import
of models/ndt1.py), all present in the repository, so the script chdirs to the checkout root.
Python deps beyond torch: numpy, scipy, pyyaml, transformers (ndt1.py imports
transformers.activations.ACT2FN and scipy.signal at module level).

usage: torch_official_step.py --checkout DIR [--commit SHA] [--batch 16] [--units 668]
       [--steps 10] [--warmup 2] [--threads 2] [--device cpu|cuda]
With --device cuda the model and the batch live on the GPU and every step is timed between
two torch.cuda.synchronize() calls (the trainer's own loss.item() syncs too).
Prints one JSON line on stdout; everything else (official prints, warnings) goes to stderr.
"""

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

# Real IBL (Beryl) regions of the repeated-site probe, so intra/inter-region masking has
# several regions to pick from; units get them in contiguous depth-like blocks.
REGIONS = ["VISa", "CA1", "DG", "LP", "PO"]
BINS = 100  # config.data.max_time_length = embedder.max_F: IBL trials are 2 s of 20 ms bins


def parse_args():
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--checkout", required=True, help="root of an IBL_foundation_model checkout")
    a.add_argument("--commit", default=None, help="commit of the checkout, for the report")
    for name, default in [("batch", 16), ("units", 668), ("steps", 10), ("warmup", 2),
                          ("threads", 2)]:
        a.add_argument(f"--{name}", type=int, default=default)
    a.add_argument("--device", default="cpu", help="cpu or cuda")
    return a.parse_args()


def source_commit(checkout, given):
    if given:
        return given
    if os.path.exists(os.path.join(checkout, ".git")):
        try:
            return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return "unknown"  # e.g. a `git archive` export: pass --commit


def build():
    """train_sessions.py's config merge (model yaml as both default and `model:` include,
    then the trainer yaml). Must run with cwd = checkout root: the paths are relative."""
    from models.ndt1 import NDT1, include_eids
    from utils.config_utils import config_from_kwargs, update_config

    config = config_from_kwargs({"model": "include:src/configs/ndt1_stitching_prompting.yaml"})
    config = update_config("src/configs/ndt1_stitching_prompting.yaml", config)
    config = update_config("src/configs/ssl_sessions_trainer.yaml", config)
    return config, NDT1, update_config, include_eids


def make_batch(b, t, n, eid, gen):
    """What make_loader(stitching=True) yields for one session: default_collate of
    BaseDataset._preprocess_ibl_data items (trials are never padded in time: 100 bins)."""
    rates = torch.distributions.Gamma(0.5, 5.0).sample((n,))  # ~0.1 spikes/bin, skewed
    spikes = torch.poisson(rates.expand(b, t, n).contiguous(), generator=gen)
    per_unit = [REGIONS[i * len(REGIONS) // n] for i in range(n)]
    return {
        "spikes_data": spikes.float(),                                          # (B,T,N) f32
        "time_attn_mask": torch.ones(b, t, dtype=torch.int64),                  # (B,T)
        "space_attn_mask": torch.ones(b, n, dtype=torch.int64),                 # (B,N)
        "spikes_timestamps": torch.arange(t, dtype=torch.int64).expand(b, t).clone(),
        "spikes_spacestamps": torch.arange(n, dtype=torch.int64).expand(b, n).clone(),
        "target": torch.full((b, 1), float("nan"), dtype=torch.float64),       # no behaviour
        "neuron_depths": torch.linspace(0, 3800, n).expand(b, n).clone(),
        # collate transposes a per-trial list of N strings into N tuples of B strings;
        # NDT1.forward turns that back into a (B,N) str array.
        "neuron_regions": [(r,) * b for r in per_unit],
        "eid": [eid] * b,
    }


def train_step(model, optimizer, scheduler, batch, mode, config):
    # Trainer._forward_model_outputs, with the same keyword arguments.
    outputs = model(
        batch["spikes_data"],
        time_attn_mask=batch["time_attn_mask"],
        space_attn_mask=batch["space_attn_mask"],
        spikes_timestamps=batch["spikes_timestamps"],
        spikes_spacestamps=batch["spikes_spacestamps"],
        targets=batch["target"],
        neuron_regions=batch["neuron_regions"],
        masking_mode=mode,
        spike_augmentation=config.data.spike_augmentation,
        num_neuron=batch["spikes_data"].shape[2],
        eid=batch["eid"][0],
    )
    loss = outputs.loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def main():
    args = parse_args()
    checkout = os.path.abspath(args.checkout)
    if not os.path.isfile(os.path.join(checkout, "src", "models", "ndt1.py")):
        sys.exit(f"{checkout} is not an IBL_foundation_model checkout (no src/models/ndt1.py)")
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.join(checkout, "src"))
    os.chdir(checkout)

    # The official code prints progress to stdout; keep stdout for the JSON line alone.
    with contextlib.redirect_stdout(sys.stderr):
        config, NDT1, update_config, include_eids = build()
        # utils.utils.set_seed, inlined: importing utils.utils pulls matplotlib and sklearn.
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)

        # load_ibl_dataset's meta_data (split_method 'predefined'): the only keys it has.
        # The eid must be in data/target_eids.txt: the session embedding is looked up there.
        eid = include_eids[0]
        meta_data = {"num_neurons": [args.units], "num_sessions": 1, "eids": {eid}}
        config = update_config(config, meta_data)
        device = torch.device(args.device)
        model = NDT1(config.model, **config.method.model_kwargs, **meta_data).to(device)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                                      weight_decay=config.optimizer.wd, eps=config.optimizer.eps)
        n_steps = 4 * args.warmup + 5 * args.steps
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, total_steps=n_steps + 1, max_lr=config.optimizer.lr,
            pct_start=config.optimizer.warmup_pct, div_factor=config.optimizer.div_factor)

        # Trainer.__init__: the scheme list and the ratio to restore come from the masker.
        masker = model.encoder.masker
        base_ratio, base_mode = masker.ratio, masker.mode
        schemes = ["neuron", "causal"]
        if base_mode == "all":
            schemes += ["intra-region", "inter-region"]
        assert base_mode in ("combined", "all"), f"unexpected masker mode {base_mode}"

        gen = torch.Generator().manual_seed(config.seed)
        template = {k: (v.to(device) if torch.is_tensor(v) else v)
                    for k, v in make_batch(args.batch, BINS, args.units, eid, gen).items()}
        cuda = device.type == "cuda"

        def timed(mode):
            masker.ratio = 0.6 if mode == "causal" else base_ratio  # 'temporal' is not drawn
            # The masker zeroes spikes_data in place; the trainer gets a fresh batch each step.
            batch = dict(template, spikes_data=template["spikes_data"].clone())
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(model, optimizer, scheduler, batch, mode, config)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

        for mode in schemes:  # touch every code path before timing anything
            for _ in range(args.warmup):
                timed(mode)
        mixed = [timed(random.sample(schemes, 1)[0]) for _ in range(args.steps)]
        by_mode = {m: statistics.median([timed(m) for _ in range(args.steps)]) for m in schemes}

    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "torch": torch.__version__, "threads": args.threads, "params": params,
        "device": args.device,
        "step_s_median": statistics.median(mixed), "by_mode": by_mode, "modes": schemes,
        "batch": args.batch, "units": args.units, "bins": BINS, "steps": args.steps,
        "source": f"colehurwitz/IBL_foundation_model@{source_commit(checkout, args.commit)}",
    }))


if __name__ == "__main__":
    main()
