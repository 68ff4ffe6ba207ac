"""Reads a dataset written by mtm with pyarrow and Hugging Face `datasets` alone.

Checks the schema of spec §1.1 column by column, decodes the CSR spikes with numpy, and
prints per-session, per-split summaries as JSON for the Rust test to compare with its own.
"""
import glob
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EXPECTED = {
    "spikes_sparse_data": pa.list_(pa.int64()),
    "spikes_sparse_indices": pa.list_(pa.int64()),
    "spikes_sparse_indptr": pa.list_(pa.int64()),
    "spikes_sparse_shape": pa.list_(pa.int64()),
    "choice": pa.list_(pa.float64()),
    "reward": pa.list_(pa.float64()),
    "block": pa.list_(pa.float64()),
    "whisker-motion-energy": pa.list_(pa.float64()),
    "wheel-speed": pa.list_(pa.float64()),
    "binsize": pa.float64(),
    "interval_len": pa.int64(),
    "eid": pa.string(),
    "probe_name": pa.string(),
    "subject": pa.string(),
    "lab": pa.string(),
    "sampling_freq": pa.float64(),
    "cluster_regions": pa.list_(pa.string()),
    "cluster_channels": pa.list_(pa.int64()),
    "cluster_depths": pa.list_(pa.float64()),
    "good_clusters": pa.list_(pa.int64()),
    "cluster_uuids": pa.list_(pa.string()),
}


def main(root):
    out = {}
    for folder in sorted(glob.glob(os.path.join(root, "*_aligned"))):
        session = {}
        for split in ("train", "val", "test"):
            files = sorted(glob.glob(os.path.join(folder, "data", f"{split}-*.parquet")))
            assert files, f"no {split} files in {folder}"
            table = pa.concat_tables(pq.read_table(f) for f in files)
            for name, typ in EXPECTED.items():
                field = table.schema.field(name)
                assert field.type == typ, f"{name}: {field.type} != {typ}"
            rows = table.to_pylist()
            # A split may hold no trials (BrainWideBench pretraining files have no test domain).
            n_units = len(rows[0]["cluster_regions"]) if rows else 0
            sums, unit_sums = [], np.zeros(n_units, dtype=np.int64)
            for row in rows:
                n_bins, n = row["spikes_sparse_shape"]
                assert n == n_units and n_bins == 100
                dense = np.zeros((n_bins, n), dtype=np.int64)
                indptr = np.asarray(row["spikes_sparse_indptr"])
                indices = np.asarray(row["spikes_sparse_indices"])
                data = np.asarray(row["spikes_sparse_data"])
                for t in range(n_bins):
                    np.add.at(dense[t], indices[indptr[t]:indptr[t + 1]], data[indptr[t]:indptr[t + 1]])
                sums.append(int(dense.sum()))
                unit_sums += dense.sum(axis=0)
                assert len(row["whisker-motion-energy"]) == n_bins
                assert len(row["choice"]) == 1 and row["choice"][0] in (-1.0, 1.0)
            # The compact side-cars (Arrow IPC beside data/): the same trials, read by pyarrow.
            car_sums, car_choice = [], []
            for f in files:
                stem = os.path.basename(f)[: -len(".parquet")]
                car = pa.ipc.open_file(os.path.join(folder, "mtm", stem + ".arrow")).read_all()
                assert car.schema.field("units").type == pa.list_(pa.field("item", pa.uint16(), False))
                for indptr, units, counts, choice in zip(
                    car.column("indptr").to_pylist(),
                    car.column("units").to_pylist(),
                    car.column("counts").to_pylist(),
                    car.column("choice").to_pylist(),
                ):
                    assert len(indptr) == 101 and indptr[-1] == len(units) == len(counts)
                    assert max(units, default=0) < n_units
                    car_sums.append(int(sum(counts)))
                    car_choice.append(choice)
            assert car_sums == sums, (folder, split)
            assert car_choice == [r["choice"][0] for r in rows], (folder, split)
            if split == "train":
                # The session's provenance, as key-value metadata in each file's footer.
                meta = pq.read_metadata(files[0]).metadata or {}
                session["metadata"] = {
                    k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW:")
                }
            session[split] = {
                "rows": len(rows),
                "trial_sums": sums,
                "unit_sums": unit_sums.tolist(),
                "choice": [r["choice"][0] for r in rows],
            }
            # Hugging Face datasets, as a user of the published data would load it (it
            # refuses a split with no rows, which pyarrow read above).
            if not rows:
                continue
            import datasets

            loaded = datasets.load_dataset(
                "parquet", data_files={split: files}, cache_dir=os.path.join(root, ".hf-cache")
            )[split]
            assert loaded.num_rows == len(rows), (loaded.num_rows, len(rows))
            assert loaded[0]["eid"] == rows[0]["eid"]
            assert loaded[0]["spikes_sparse_indptr"] == rows[0]["spikes_sparse_indptr"]
        out[os.path.basename(folder)[: -len("_aligned")]] = session
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
