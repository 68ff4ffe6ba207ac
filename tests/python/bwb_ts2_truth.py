"""Writes BrainWideBench TS2 ground truth for session files, as BWB's test loop defines it,
with the real `temporaldata` package doing the reading, the interval intersection and the
window slicing, independently of mtm:

- windows: torch_brain's SequentialFixedWindowSampler over
  task_aligned_intervals.domain & ts2_test_domain (1 s windows stepped by 20 ms, starts at
  start + i * step while they fit, then one window ending at the interval's end; intervals
  shorter than a window hold none);
- counts: each window sliced with `Data.slice` (the origin reset to the window start) and
  binned as torch_brain's `bin_spikes` does (bin = floor(t * 50));
- co-smoothing targets: the held-out units (the file's ts2_co_smoothing_is_held_out_test,
  else BWB's SHA-256 rule) over all 50 bins; forecasting targets: every unit, last 5 bins.

Usage: bwb_ts2_truth.py GT_DIR FILE.h5 [FILE.h5 ...]
Writes GT_DIR/ts2-{co_smoothing,forecasting}/{eid}/ground_truth.safetensors (`targets`
f32, `window_timestamps` f64) and prints, as JSON, per session: windows, held-out unit ids.
"""
import hashlib
import json
import math
import os
import sys

import h5py
import numpy as np
from safetensors.numpy import save_file
from temporaldata import Data

BIN, WINDOW, FORECAST_BINS = 0.02, 1.0, 5


def held_out_mask(unit_ids, salt="ts2_co_smoothing_test", ratio=0.1):
    k = max(1, round(ratio * len(unit_ids)))
    digests = [hashlib.sha256(f"{salt}:{uid}".encode()).hexdigest() for uid in unit_ids]
    order = sorted(range(len(unit_ids)), key=lambda i: digests[i])
    mask = np.zeros(len(unit_ids), dtype=bool)
    mask[order[:k]] = True
    return mask


def window_starts(intervals):
    starts = []
    for start, end in zip(intervals.start, intervals.end):
        if end - start < WINDOW:
            continue
        count = math.ceil((end - start) / BIN)
        these = [start + i * BIN for i in range(count) if start + i * BIN + WINDOW <= end]
        starts.extend(these)
        if these[-1] + WINDOW < end:
            starts.append(end - WINDOW)
    return np.array(starts, dtype=np.float64)


def counts_of(data, n_units, start):
    piece = data.slice(start, start + WINDOW)
    out = np.zeros((round(WINDOW / BIN), n_units), dtype=np.float32)
    bins = np.floor(np.asarray(piece.spikes.timestamps) * (1 / BIN)).astype(int)
    np.add.at(out, (np.minimum(bins, out.shape[0] - 1), np.asarray(piece.spikes.unit_index)), 1)
    return out


def main():
    gt_dir, files = sys.argv[1], sys.argv[2:]
    report = {}
    for path in files:
        with h5py.File(path, "r") as f:
            data = Data.from_hdf5(f, lazy=False)
        eid = str(data.session.id)
        ids = [u.decode() if isinstance(u, bytes) else str(u) for u in data.units.id]
        if hasattr(data.units, "ts2_co_smoothing_is_held_out_test"):
            held = np.asarray(data.units.ts2_co_smoothing_is_held_out_test, dtype=bool)
        else:
            held = held_out_mask(ids)
        intervals = data.task_aligned_intervals.domain & data.ts2_test_domain
        starts = window_starts(intervals)
        counts = np.stack([counts_of(data, len(ids), s) for s in starts])
        targets = {
            "ts2-co_smoothing": counts[:, :, held],
            "ts2-forecasting": counts[:, -FORECAST_BINS:, :],
        }
        for task, values in targets.items():
            folder = os.path.join(gt_dir, task, eid)
            os.makedirs(folder, exist_ok=True)
            save_file({"targets": np.ascontiguousarray(values), "window_timestamps": starts},
                      os.path.join(folder, "ground_truth.safetensors"))
        report[eid] = {"windows": len(starts), "held_out": [f"{eid}/{ids[u]}" for u in np.flatnonzero(held)],
                       "spikes_scored": {t: float(v.sum()) for t, v in targets.items()}}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
