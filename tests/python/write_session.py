"""Writes one session in the published layout with pyarrow and numpy alone.

The layout comes from spec §1.1, not from mtm's writer, so mtm's reader is checked against
an independent producer. Extra columns the spec allows (an unknown column, `cluster_qc` as a
struct) are included and must be ignored. Prints the dense counts and behaviour it wrote as
JSON. With --bad-shape, `spikes_sparse_shape` disagrees with `cluster_regions`.
"""
import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

parser = argparse.ArgumentParser()
parser.add_argument("root")
parser.add_argument("--bad-shape", action="store_true")
args = parser.parse_args()

rng = np.random.default_rng(1234)
eid = "3a3ea015-b5f4-4e8b-b189-9364d1fc7435"
n_units, n_bins = 25, 100
regions = ["CA1"] * 10 + ["DG-mo"] * 8 + ["LP"] * 7
listed_regions = regions + ["PO", "PO"] if args.bad_shape else regions
out = {"eid": eid, "n_units": n_units, "splits": {}}
for split, n_trials in (("train", 13), ("val", 3), ("test", 5)):
    dense = rng.poisson(0.3, size=(n_trials, n_bins, n_units)).astype(np.int64)
    rows = {k: [] for k in ("data", "indices", "indptr", "shape")}
    for trial in dense:
        nz_t, nz_u = np.nonzero(trial)
        rows["data"].append(trial[nz_t, nz_u].tolist())
        rows["indices"].append(nz_u.tolist())
        rows["indptr"].append(np.concatenate([[0], np.cumsum(np.bincount(nz_t, minlength=n_bins))]).tolist())
        rows["shape"].append([n_bins, n_units])
    choice = rng.choice([-1.0, 1.0], size=n_trials)
    whisker = rng.random((n_trials, n_bins))
    table = pa.table(
        {
            "spikes_sparse_data": pa.array(rows["data"], pa.list_(pa.int64())),
            "spikes_sparse_indices": pa.array(rows["indices"], pa.list_(pa.int64())),
            "spikes_sparse_indptr": pa.array(rows["indptr"], pa.list_(pa.int64())),
            "spikes_sparse_shape": pa.array(rows["shape"], pa.list_(pa.int64())),
            "choice": pa.array([[c] for c in choice], pa.list_(pa.float64())),
            "reward": pa.array([[1.0]] * n_trials, pa.list_(pa.float64())),
            "block": pa.array([[0.5]] * n_trials, pa.list_(pa.float64())),
            "whisker-motion-energy": pa.array(whisker.tolist(), pa.list_(pa.float64())),
            "binsize": pa.array([0.02] * n_trials),
            "interval_len": pa.array([2] * n_trials),
            "eid": pa.array([eid] * n_trials),
            "probe_name": pa.array(["probe00"] * n_trials),
            "subject": pa.array(["KS014"] * n_trials),
            "lab": pa.array(["cortexlab"] * n_trials),
            "sampling_freq": pa.array([30000.0] * n_trials),
            "cluster_regions": pa.array([listed_regions] * n_trials, pa.list_(pa.string())),
            "cluster_channels": pa.array([list(range(n_units))] * n_trials, pa.list_(pa.int64())),
            "cluster_depths": pa.array([[float(20 * i) for i in range(n_units)]] * n_trials),
            "good_clusters": pa.array([[1] * n_units] * n_trials, pa.list_(pa.int64())),
            "cluster_uuids": pa.array([[f"u{i}" for i in range(n_units)]] * n_trials),
            "cluster_qc": pa.array(
                [{"amp_median": [1.0] * n_units, "label": [1.0] * n_units}] * n_trials
            ),
            "some_future_column": pa.array(["ignored"] * n_trials),
        }
    )
    folder = os.path.join(args.root, f"{eid}_aligned", "data")
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, f"{split}-00000-of-00001.parquet"), row_group_size=4)
    out["splits"][split] = {
        "dense": dense.reshape(n_trials, -1).tolist(),
        "choice": choice.tolist(),
        "whisker": whisker.reshape(-1).tolist(),
    }
print(json.dumps(out))
