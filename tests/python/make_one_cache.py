"""Writes a ONE cache's tables as ONE 2+ saves them (pandas, pyarrow): `sessions.pqt`
indexed by `id` (UUID strings) with a comma-separated `projects` column, `datasets.pqt`
indexed by (`eid`, `id`), and a tag-restricted cache in `{tag}/`, as
`OneAlyx.load_cache(tag=...)` leaves it.

usage: make_one_cache.py DIR TAG ID:PROJECTS[:tagged] ...   (PROJECTS `-` for none)
"""
import os
import sys
import uuid

import pandas as pd

root, tag, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows, tagged = [], []
for n, spec in enumerate(specs):
    eid, projects, *flags = spec.split(":")
    row = {"id": eid, "lab": "cortexlab", "subject": f"KS{n:03d}",
           "date": pd.Timestamp("2024-01-01").date(), "number": n,
           "task_protocol": "_iblrig_tasks_ephysChoiceWorld6.4.2",
           "projects": None if projects == "-" else projects}
    rows.append(row)
    if "tagged" in flags:
        tagged.append(row)


def write(folder, session_rows):
    os.makedirs(folder, exist_ok=True)
    sessions = pd.DataFrame(session_rows).astype({"number": "uint16"}).set_index("id")
    sessions.to_parquet(os.path.join(folder, "sessions.pqt"))
    datasets = pd.DataFrame([
        {"eid": r["id"], "id": str(uuid.uuid4()), "rel_path": "alf/probe00/spikes.times.npy",
         "file_size": 1000, "hash": "0", "exists": True, "qc": "PASS"} for r in session_rows
    ]).set_index(["eid", "id"])
    datasets.to_parquet(os.path.join(folder, "datasets.pqt"))


write(root, rows)
write(os.path.join(root, tag), tagged)
