"""The reference for `mtm ingest bwb`'s throughput: the same core work in vectorised
numpy through h5py, as a Python user would write it. For each file: read the spike times
and unit indices and the trials table, keep the trials mtm keeps (finite events, a choice,
reaction time in [0.08, 2.0] s), and bin each kept trial's window (stimulus onset -0.5 s,
100 bins of 20 ms) into a (100, N) count matrix. It writes nothing (mtm also writes
Parquet and side-cars) and skips behaviour, so the ratio flatters the reference.

usage: bwb_ingest_numpy.py FILE.h5 [FILE.h5 ...]   (prints spikes/s over all files)
"""
import sys
import time

import h5py
import numpy as np

N_BINS, BIN, PRE = 100, 0.02, 0.5

start = time.perf_counter()
spikes = trials = 0
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        times = f["spikes/timestamps"][:]
        units = f["spikes/unit_index"][:]
        n_units = len(f["units/id"])
        stim = f["trials/stim_on_time"][:]
        move = f["trials/movement_onset_time"][:]
        choice = f["trials/choice"][:]
        feedback = f["trials/feedback_type"][:]
        prob = f["trials/probability_left"][:]
    spikes += len(times)
    rt = move - stim
    ok = np.isfinite(np.stack([stim, move, choice, feedback, prob])).all(axis=0)
    ok &= (choice != 2) & (rt >= 0.08) & (rt <= 2.0)
    for t0 in stim[ok] - PRE:
        lo, hi = np.searchsorted(times, [t0, t0 + N_BINS * BIN])
        b = np.floor((times[lo:hi] - t0) / BIN).astype(np.int64)
        keep = (b >= 0) & (b < N_BINS)
        dense = np.bincount(b[keep] * n_units + units[lo:hi][keep], minlength=N_BINS * n_units)
        dense.reshape(N_BINS, n_units)
        trials += 1
seconds = time.perf_counter() - start
print(f"numpy reference: {len(sys.argv) - 1} files, {trials} trials, {spikes} spikes in "
      f"{seconds:.2f}s ({spikes / seconds / 1e6:.2f} M spikes/s)")
