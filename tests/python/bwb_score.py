"""Scores a BrainWideBench TS2 submission with BWB's own scorer (`ibl_bwb_eval`, which needs
torch) and prints, as JSON, one row per prediction file: the scorer's `score_dir` metrics,
plus what the scorer does not check itself: how many windows the file and the ground truth
hold and share, whether the file's unit ids match the ground truth's units, and its metadata.

Usage: bwb_score.py PRED_DIR GT_DIR   (run with the interpreter that has ibl_bwb_eval)
"""
import json
import sys
from pathlib import Path

import numpy as np
from ibl_bwb_eval.entity_ids import decode_entity_ids
from ibl_bwb_eval.predictions import version_of
from ibl_bwb_eval.scoring.ts2 import score_dir
from safetensors import safe_open
from safetensors.numpy import load_file


def main():
    pred_dir, gt_dir = Path(sys.argv[1]), Path(sys.argv[2])
    scores = score_dir(pred_dir, gt_dir)
    rows = []
    for path in sorted(pred_dir.rglob("seed_*.safetensors")):
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata()
        pred = load_file(str(path))
        gt = load_file(str(gt_dir / meta["task"] / meta["recording_id"] / "ground_truth.safetensors"))
        key = (meta["label"], meta["task"], meta["recording_id"], int(meta["seed"]))
        common = np.intersect1d(pred["window_timestamps"], gt["window_timestamps"])
        rows.append({
            "file": str(path.relative_to(pred_dir)),
            "label": key[0], "task": key[1], "recording_id": key[2], "seed": key[3],
            "scores": scores.get(key),
            "windows": {"pred": len(pred["window_timestamps"]), "gt": len(gt["window_timestamps"]),
                        "common": len(common)},
            "dtypes": {k: str(v.dtype) for k, v in pred.items()},
            "shape": list(pred["predictions"].shape), "gt_shape": list(gt["targets"].shape),
            "unit_ids": decode_entity_ids_np(pred["unit_ids"]),
            "version": version_of(meta),
            "metadata": meta,
        })
    print(json.dumps(rows))


def decode_entity_ids_np(matrix):
    # decode_entity_ids takes a torch tensor; torch is there, since the scorer needs it.
    import torch
    return decode_entity_ids(torch.from_numpy(matrix)).tolist()


if __name__ == "__main__":
    main()
