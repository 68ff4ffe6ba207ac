"""Writes BrainWideBench-style session files (`{eid}.h5`) with the real `temporaldata`
package, spikes drawn from known rates, and prints, as JSON, what a correct conversion must
produce, computed here independently with numpy: kept trials (the same filter as the ALF
ingest), their split (the BWB domain that holds the whole window), counts per bin
(numpy.histogram over the bin edges), behaviour interpolated at the right bin edges
(numpy.interp on the 50 Hz grid), and the unit table.

Usage: make_bwb.py ROOT [--bad] [--units N --trials K --rate HZ --sessions S]
                   [--eval-sessions E] [--no-expect]
Writes, in the bucket's layout under ROOT/selected_units/ibl_brain_wide_bench_2026/,
pretrain/{eid}.h5 (two sessions, BWB's pretrain train/val domains) and eval/{eid}.h5 (one
session, BWB's ts2 train/val/test domains). With --bad, also pretrain/not-hdf5.h5 (garbage
bytes) and a valid HDF5 file without /spikes.

Every file has /task_aligned_intervals/domain (one interval per trial with a stimulus and
a choice, stimulus onset -0.9 s to about +1.6 s, lengths varied so that windows do not
tile them exactly). Evaluation files carry BWB's co-smoothing hold-out columns
(/units/ts2_co_smoothing_is_held_out_{test,val}, by BWB's SHA-256 rule), except the
second evaluation session and later ones (--eval-sessions), which leave them out as a
build without them would, so that a reader must apply the rule itself.
"""
import argparse
import hashlib
import json
import os
import uuid

import h5py
import numpy as np
from temporaldata import ArrayDict, Data, Interval, IrregularTimeSeries, RegularTimeSeries

N_BINS, BIN, PRE, FS = 100, 0.02, 0.5, 50
REGIONS = [("CA1", "CA1", "HPF"), ("DG-mo", "DG", "HPF"), ("LP", "LP", "TH"), ("CP", "CP", "CNU")]
CHOICE_MAP = {-1.0: 0, 0.0: 2, 1.0: 1}  # BWB's re-encoding: right, no-choice, left


def strings(values):
    return np.array(values, dtype=object)


def held_out_mask(unit_ids, salt, ratio=0.1):
    """BWB's co-smoothing hold-out: the k units first by sha256("{salt}:{id}")."""
    k = max(1, round(ratio * len(unit_ids)))
    digests = [hashlib.sha256(f"{salt}:{uid}".encode()).hexdigest() for uid in unit_ids]
    order = sorted(range(len(unit_ids)), key=lambda i: digests[i])
    mask = np.zeros(len(unit_ids), dtype=bool)
    mask[order[:k]] = True
    return mask


def make_session(path, rng, eid, n_units, n_trials, rate_hz, kind, expect=True, held_out=True):
    gap = 4.0
    stim = 3.0 + np.arange(n_trials) * gap + rng.uniform(0, 0.3, n_trials)
    duration = stim[-1] + 5.0
    rt = rng.uniform(0.1, 1.5, n_trials)
    rt[::7] = 0.05  # too fast
    rt[3::11] = 2.4  # too slow
    raw_choice = rng.choice([-1.0, 1.0], n_trials)
    raw_choice[5::13] = 0.0  # no response
    stim_nan = stim.copy()
    stim_nan[9::17] = np.nan
    feedback_type = rng.choice([-1.0, 1.0], n_trials)
    prob_left = rng.choice([0.2, 0.5, 0.8], n_trials)
    # Spikes: a base rate per unit and a burst after stimulus onset, both known.
    base = rng.uniform(0.5, 1.5, n_units) * rate_hz
    times, units = [], []
    for u in range(n_units):
        t = rng.uniform(0, duration, rng.poisson(base[u] * duration))
        burst = np.concatenate([s + rng.uniform(0, 0.3, rng.poisson(3.0)) for s in stim])
        times.append(np.concatenate([t, burst]))
        units.append(np.full(len(t) + len(burst), u, dtype=np.int64))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times, kind="stable")
    times, units = times[order], units[order]
    spikes = IrregularTimeSeries(timestamps=times, unit_index=units, domain="auto")
    regions = [REGIONS[i] for i in rng.integers(0, len(REGIONS), n_units)]
    ids = [str(uuid.UUID(int=int(rng.integers(1 << 62)))) for _ in range(n_units)]
    label = rng.choice([1.0, 0.66], n_units)
    channels = rng.integers(0, 384, n_units)
    depths = rng.uniform(0, 3840, n_units)
    unit_table = ArrayDict(
        id=strings(ids), label=label, channels=channels, depths=depths,
        firing_rate=base, region_allen=strings([r[0] for r in regions]),
        region_beryl=strings([r[1] for r in regions]), region_cosmos=np.array([r[2] for r in regions]),  # numpy U: fixed-length in the file
        probe_id=strings(["pid-0"] * n_units), qc_neural=strings(["PASS"] * n_units))
    trials = Interval(
        start=stim - 1.0, end=stim + 2.9, stim_on_time=stim_nan, movement_onset_time=stim + rt,
        feedback_time=stim + rt + 0.1, go_cue_time=stim + 0.01,
        choice=np.array([CHOICE_MAP[c] for c in raw_choice]), feedback_type=feedback_type,
        reward=(feedback_type == 1).astype(np.int64), probability_left=prob_left,
        trial_index=np.arange(n_trials),
        timekeys=["start", "end", "stim_on_time", "movement_onset_time", "feedback_time", "go_cue_time"])
    grid_start = 0.013
    n_grid = int((duration - grid_start) * FS)
    grid = grid_start + np.arange(n_grid) / FS
    whisker = np.abs(np.sin(grid)) * 10 + rng.uniform(0, 1, n_grid)
    wheel = np.abs(np.cos(grid / 3)).astype(np.float32)
    data = Data(
        brainset=Data(id="ibl_brain_wide_bench_2026", origin_version="0.0.1", derived_version="0.1.0",
                      source="one-api", description="synthetic", unit_filtering="selected_units",
                      unit_filters="firing_rate,unit_qc", unit_filter_thresholds="firing_rate > 1.0, label == 1.0"),
        subject=Data(id="SUBJ-" + eid[:4], species="MUS_MUSCULUS"),
        session=Data(id=eid, recording_date="2020-01-01 00:00:00"),
        device=Data(id="lab_SUBJ_20200101", recording_tech="NEUROPIXELS_ARRAY"),
        provenance=Data(pipeline_commit="abc123", built_at="2026-09-03T00:00:00"),
        lab="testlab", spikes=spikes, units=unit_table,
        probes=ArrayDict(id=strings(["pid-0"]), name=strings(["probe00"])),
        trials=trials,
        whisker=RegularTimeSeries(sampling_rate=FS, domain_start=grid_start, whisker_motion_energy=whisker),
        wheel=RegularTimeSeries(sampling_rate=FS, domain_start=grid_start, wheel_speed=wheel),
        domain=spikes.domain)
    # BWB's split domains: the windows of trials that straddle a boundary belong to none.
    if kind == "pretrain":
        cut = stim[int(n_trials * 0.8)] - 1.0
        domains = {"pretrain_train_domain": ([0.0], [cut]), "pretrain_val_domain": ([cut + 0.8], [duration])}
        names = ["pretrain_train_domain", "pretrain_val_domain", None]
    else:
        a, b = stim[int(n_trials * 0.5)] - 1.0, stim[int(n_trials * 0.75)] - 1.0
        domains = {"ts2_train_domain": ([0.0], [a]), "ts2_val_domain": ([a + 0.8], [b]),
                   "ts2_test_domain": ([b + 0.8], [duration])}
        names = ["ts2_train_domain", "ts2_val_domain", "ts2_test_domain"]
    for name, (s, e) in domains.items():
        setattr(data, name, Interval(start=np.array(s), end=np.array(e)))
    # BWB's task-aligned intervals: one per trial with a stimulus and a choice; the jitter
    # (no random draw, so the data above stays as it was) makes lengths off the 20 ms grid.
    valid = ~np.isnan(stim_nan) & (raw_choice != 0)
    jitter = 0.01 * ((np.arange(n_trials) * 7) % 5)
    data.task_aligned_intervals = Data(domain=Interval(
        start=(stim - 0.9)[valid], end=(stim + 1.6 + jitter)[valid]))
    if kind == "eval" and held_out:
        unit_table.ts2_co_smoothing_is_held_out_test = held_out_mask(ids, "ts2_co_smoothing_test")
        unit_table.ts2_co_smoothing_is_held_out_val = held_out_mask(ids, "ts2_co_smoothing_val")
    with h5py.File(path, "w") as f:
        data.to_hdf5(f)
    if not expect:
        return {"eid": eid, "file": path, "spikes": int(len(times)), "bytes": os.path.getsize(path)}

    # The expected conversion, from the arrays above.
    kept, counts, whisk, whe, meta = [], [], [], [], {"nan": 0, "no_choice": 0, "rt": 0, "split": 0}
    for k in range(n_trials):
        events = [stim_nan[k], stim[k] + rt[k], raw_choice[k], feedback_type[k], prob_left[k]]
        if np.any(np.isnan(events)):
            meta["nan"] += 1
            continue
        if raw_choice[k] == 0:
            meta["no_choice"] += 1
            continue
        if not (0.08 <= rt[k] <= 2.0):
            meta["rt"] += 1
            continue
        t0 = stim[k] - PRE
        split = None
        for s, name in enumerate(names):
            if name is None:
                continue
            (st,), (en,) = domains[name]
            if st <= t0 and t0 + N_BINS * BIN <= en:
                split = s
        if split is None:
            meta["split"] += 1
            continue
        edges = t0 + np.arange(N_BINS + 1) * BIN
        dense = np.zeros((N_BINS, n_units), dtype=np.int64)
        for u in range(n_units):
            dense[:, u] = np.histogram(times[units == u], bins=edges)[0]
        kept.append({"split": split, "choice": raw_choice[k], "reward": float(feedback_type[k] == 1),
                     "block": prob_left[k], "counts": dense.tolist(),
                     "whisker": np.interp(edges[1:], grid, whisker).tolist(),
                     "wheel": np.interp(edges[1:], grid, wheel.astype(np.float64)).tolist()})
    return {"eid": eid, "file": path, "trials_total": n_trials, "dropped": meta, "trials": kept,
            "regions": {"allen": [r[0] for r in regions], "beryl": [r[1] for r in regions],
                        "cosmos": [r[2] for r in regions]},
            "uuids": ids, "good": [int(x == 1.0) for x in label], "channels": channels.tolist(),
            "depths": depths.tolist(), "spikes": int(len(times)), "subject": "SUBJ-" + eid[:4]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--bad", action="store_true")
    p.add_argument("--units", type=int, default=9)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--sessions", type=int, default=2, help="pretraining sessions")
    p.add_argument("--eval-sessions", type=int, default=1,
                   help="evaluation sessions (the second and later without hold-out columns)")
    p.add_argument("--no-expect", action="store_true",
                   help="only write the files (for benchmarks): print spike counts and sizes")
    args = p.parse_args()
    rng = np.random.default_rng(7)
    out = {}
    base = os.path.join(args.root, "selected_units", "ibl_brain_wide_bench_2026")
    for kind, count in [("pretrain", args.sessions), ("eval", args.eval_sessions)]:
        os.makedirs(os.path.join(base, kind), exist_ok=True)
        for i in range(count):
            eid = str(uuid.UUID(int=int(rng.integers(1 << 62))))
            path = os.path.join(base, kind, f"{eid}.h5")
            out[eid] = dict(make_session(path, rng, eid, args.units, args.trials, args.rate, kind,
                                           expect=not args.no_expect, held_out=i == 0), kind=kind)
    if args.bad:
        with open(os.path.join(base, "pretrain", "not-hdf5.h5"), "wb") as f:
            f.write(b"this is not an HDF5 file" * 10)
        eid = "00000000-0000-0000-0000-00000000dead"
        with h5py.File(os.path.join(base, "pretrain", f"{eid}.h5"), "w") as f:
            Data(session=Data(id=eid), lab="x").to_hdf5(f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
