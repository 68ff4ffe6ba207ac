"""Builds ALF session folders (as the ONE cache holds them) with numpy and pyarrow alone,
and prints, as JSON, what a correct conversion must produce, computed here independently:
kept trials, binned counts (numpy.histogram over bin edges), behaviour interpolated at the
right bin edges (numpy.interp, numpy.gradient), unit regions (a hand-written id table).

Usage: make_alf.py ROOT [--spikes-per-unit-hz R --duration S --units N --trials K]
(the options make one large session for throughput measurements).
"""
import argparse
import json
import os
import uuid

import numpy as np
import pandas as pd

ALLEN = {382: ("CA1", "CA1", "HPF"), 10703: ("DG-mo", "DG", "HPF"), 218: ("LP", "LP", "TH"),
         1020: ("PO", "PO", "TH"), 672: ("CP", "CP", "CNU"), 997: ("root", "root", "root")}
N_BINS, BIN, PRE = 100, 0.02, 0.5


def write_probe(folder, rng, n_clusters, duration, rate_hz, n_channels=24):
    os.makedirs(folder, exist_ok=True)
    ids = np.array(list(ALLEN))
    locations = rng.choice(ids, size=n_channels) * rng.choice([1, -1], size=n_channels)
    channels = rng.integers(0, n_channels, size=n_clusters)
    n_spikes = rng.poisson(rate_hz * duration * n_clusters)
    times = np.sort(rng.uniform(0, duration, size=n_spikes))
    clusters = rng.integers(0, n_clusters, size=n_spikes).astype(np.uint32)
    label = rng.choice([1.0, 0.66, 0.33], size=n_clusters)
    np.save(os.path.join(folder, "spikes.times.npy"), times)
    np.save(os.path.join(folder, "spikes.clusters.npy"), clusters)
    np.save(os.path.join(folder, "clusters.channels.npy"), channels)
    np.save(os.path.join(folder, "clusters.depths.npy"), rng.uniform(0, 3840, size=n_clusters))
    np.save(os.path.join(folder, "channels.brainLocationIds_ccf_2017.npy"), locations)
    pd.DataFrame({"uuids": [str(uuid.UUID(int=int(rng.integers(1 << 62)))) for _ in range(n_clusters)]}).to_csv(
        os.path.join(folder, "clusters.uuids.csv"), index=False)
    pd.DataFrame({"cluster_id": np.arange(n_clusters), "label": label}).to_parquet(
        os.path.join(folder, "clusters.metrics.pqt"))
    region_ids = np.abs(locations[channels])
    return {"times": times, "clusters": clusters, "n": n_clusters, "label": label, "region_ids": region_ids}


def make_session(folder, rng, probes, n_trials, duration, rate_hz, wheel=True, camera=True, bad=None, expect=True):
    alf = os.path.join(folder, "alf")
    written = []
    for name, n_clusters, nested in probes:
        pfolder = os.path.join(alf, name, "pykilosort") if nested else os.path.join(alf, name)
        written.append(write_probe(pfolder, rng, n_clusters, duration, rate_hz))
    stim = 2.0 + np.arange(n_trials) * (duration - 6.0) / n_trials + rng.uniform(0, 0.5, n_trials)
    rt = rng.uniform(0.1, 1.5, n_trials)
    rt[::7] = 0.05  # too fast
    rt[3::11] = 2.4  # too slow
    choice = rng.choice([-1.0, 1.0], n_trials)
    choice[5::13] = 0.0  # no response
    table = pd.DataFrame({
        "stimOn_times": stim, "goCue_times": stim + 0.01, "firstMovement_times": stim + rt,
        "feedback_times": stim + rt + 0.1, "choice": choice,
        "feedbackType": rng.choice([-1.0, 1.0], n_trials), "probabilityLeft": rng.choice([0.2, 0.5, 0.8], n_trials),
        "contrastLeft": rng.choice([np.nan, 1.0], n_trials), "contrastRight": rng.choice([np.nan, 1.0], n_trials),
        "rewardVolume": rng.uniform(0, 3, n_trials),
    })
    table.loc[9::17, "feedback_times"] = np.nan
    if bad == "no-trials":
        table["choice"] = 0.0
    table.to_parquet(os.path.join(alf, "_ibl_trials.table.pqt"))
    if camera:
        cam_t = np.arange(0, duration, 1 / 60.0) + 0.003
        np.save(os.path.join(alf, "_ibl_leftCamera.times.npy"), cam_t)
        np.save(os.path.join(alf, "_ibl_leftCamera.ROIMotionEnergy.npy"), rng.uniform(0, 5, cam_t.size))
    if wheel:
        wt = np.sort(np.arange(0, duration, 0.001) + rng.uniform(0, 1e-4, int(np.ceil(duration / 0.001))))
        np.save(os.path.join(alf, "_ibl_wheel.timestamps.npy"), wt)
        np.save(os.path.join(alf, "_ibl_wheel.position.npy"), np.sin(wt * 1.3) * 3 + 0.2 * wt)

    # Corruptions, each a case the converter must report.
    first = os.path.join(alf, probes[0][0], "pykilosort" if probes[0][2] else "")
    if bad == "missing":
        os.remove(os.path.join(first, "spikes.clusters.npy"))
    elif bad == "lengths":
        np.save(os.path.join(first, "spikes.clusters.npy"), written[0]["clusters"][:-3])
    elif bad == "order":
        times = written[0]["times"].copy()
        times[[10, 11]] = times[[11, 10]] + np.array([0.0, 0.5])
        np.save(os.path.join(first, "spikes.times.npy"), times)

    if not expect:
        return None
    # What a correct conversion gives.
    events = table[["stimOn_times", "goCue_times", "firstMovement_times", "feedback_times", "choice",
                    "feedbackType", "probabilityLeft"]].to_numpy()
    nan = np.isnan(events).any(axis=1)
    no_choice = ~nan & (table["choice"].to_numpy() == 0)
    rts = (table["firstMovement_times"] - table["stimOn_times"]).to_numpy()
    bad_rt = ~nan & ~no_choice & ~((rts >= 0.08) & (rts <= 2.0))
    kept = np.where(~nan & ~no_choice & ~bad_rt)[0]
    units = [(p, c) for p, w in enumerate(written) for c in range(w["n"])]
    trials = []
    if wheel:
        speed = np.abs(np.gradient(np.sin(wt * 1.3) * 3 + 0.2 * wt, wt))
    for k in kept:
        edges = stim[k] - PRE + np.arange(N_BINS + 1) * BIN
        counts = np.zeros((N_BINS, len(units)), dtype=np.int64)
        col = 0
        for w in written:
            for c in range(w["n"]):
                counts[:, col] = np.histogram(w["times"][w["clusters"] == c], bins=edges)[0]
                col += 1
        trials.append({
            "counts": counts.reshape(-1).tolist(),
            "choice": float(table["choice"][k]), "block": float(table["probabilityLeft"][k]),
            "reward": float(table["feedbackType"][k] == 1.0),
            "whisker": np.interp(edges[1:], cam_t, np.load(os.path.join(alf, "_ibl_leftCamera.ROIMotionEnergy.npy"))).tolist() if camera else None,
            "wheel": np.interp(edges[1:], wt, speed).tolist() if wheel else None,
        })
    return {
        "trials_total": n_trials, "dropped_nan": int(nan.sum()), "dropped_no_choice": int(no_choice.sum()),
        "dropped_rt": int(bad_rt.sum()),
        "regions": {lvl: [ALLEN[int(written[p]["region_ids"][c])][i] for p, c in units] for i, lvl in enumerate(["allen", "beryl", "cosmos"])},
        "good": [int(written[p]["label"][c] == 1.0) for p, c in units],
        "trials": trials,
        "spikes": int(sum(w["times"].size for w in written)),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--units", type=int)
    parser.add_argument("--trials", type=int, default=600)
    parser.add_argument("--duration", type=float, default=4000.0)
    parser.add_argument("--rate", type=float, default=8.0)
    args = parser.parse_args()
    if args.units:  # one large session, for throughput; no expectations printed
        rng = np.random.default_rng(7)
        folder = os.path.join(args.root, "large", "labx", "Subjects", "MOUSE1", "2024-01-01", "001")
        make_session(folder, rng, [("probe00", args.units // 2, False), ("probe01", args.units - args.units // 2, True)],
                     args.trials, args.duration, args.rate, expect=False)
        print(json.dumps({"folder": folder}))
        return
    rng = np.random.default_rng(2024)
    out = {}
    sessions = {
        "two-probes": (os.path.join("cortexlab", "Subjects", "KS014", "2019-12-03", "001"),
                       [("probe00", 7, False), ("probe01", 5, True)], {}),
        "one-probe": ("3a3ea015-b5f4-4e8b-b189-9364d1fc7435", [("probe00", 6, False)], {"wheel": False}),
    }
    for bad in ("missing", "lengths", "order", "no-trials"):
        sessions[bad] = (f"00000000-0000-4000-8000-00000000000{len(out) + len(sessions)}", [("probe00", 4, False)], {"bad": bad})
    for key, (rel, probes, kw) in sessions.items():
        folder = os.path.join(args.root, key, rel)
        expected = make_session(folder, rng, probes, n_trials=45, duration=300.0, rate_hz=6.0, **kw)
        expected["folder"] = folder
        out[key] = expected
    print(json.dumps(out))


if __name__ == "__main__":
    main()
