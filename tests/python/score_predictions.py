"""Recompute bits per spike from `mtm eval --save-predictions` files, outside mtm.

Reads every {eid}/{task}.safetensors (parsed with numpy alone: 8-byte little-endian header
length, JSON header, raw little-endian buffers), scores the model's log-rates on the
scored entries in both conventions of spec §4, and compares with the JSON report.
Exits 1 on any difference above 1e-9.

usage: score_predictions.py PREDICTIONS_DIR REPORT_JSON
"""

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "U8": np.uint8, "F64": np.float64}


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return out, header.get("__metadata__", {})


lgamma = np.vectorize(math.lgamma)


def nll(rate, y):
    return rate - y * np.log(rate) + lgamma(y + 1.0)


def per_unit_mean(log_rates, counts, scored):
    n = counts.shape[-1]
    lr = log_rates.reshape(-1, n).astype(np.float64)
    y = counts.reshape(-1, n).astype(np.float64)
    m = scored.reshape(-1, n).astype(bool)
    values = []
    for u in range(n):
        sel = m[:, u]
        yu = y[sel, u]
        if yu.sum() <= 0:
            continue
        null = nll(yu.mean(), yu).sum()
        model = nll(np.exp(lr[sel, u]), yu).sum()
        values.append((null - model) / (yu.sum() * math.log(2)))
    return float(np.mean(values)) if values else None


def pooled_nlb(log_rates, counts, scored):
    n = counts.shape[-1]
    lr = log_rates.reshape(-1, n).astype(np.float64)
    y = counts.reshape(-1, n).astype(np.float64)
    m = scored.reshape(-1, n).astype(bool)
    num_model = num_null = total = 0.0
    for u in range(n):
        sel = m[:, u]
        if not sel.any():
            continue
        yu = y[sel, u]
        null_rate = yu.mean() if yu.mean() != 0 else 1e-9
        rates = np.exp(lr[sel, u])
        rates[rates == 0] = 1e-9
        num_model += nll(rates, yu).sum()
        num_null += nll(np.full_like(yu, null_rate), yu).sum()
        total += yu.sum()
    return float((num_null - num_model) / (total * math.log(2))) if total > 0 else None


def main():
    folder, report_path = Path(sys.argv[1]), Path(sys.argv[2])
    report = json.loads(report_path.read_text())
    checked = 0
    for session in report["sessions"]:
        for result in session["tasks"]:
            if "bps_per_unit_mean" not in result:
                continue
            path = folder / session["eid"] / f"{result['task']}.safetensors"
            tensors, meta = read_safetensors(path)
            assert meta["task"] == result["task"], (path, meta)
            ours = per_unit_mean(tensors["log_rates"], tensors["counts"], tensors["scored"])
            nlb = pooled_nlb(tensors["log_rates"], tensors["counts"], tensors["scored"])
            for name, value in [("bps_per_unit_mean", ours), ("bps_pooled_nlb", nlb)]:
                theirs = result[name]
                if (value is None) != (theirs is None) or (
                    value is not None and abs(value - theirs) > 1e-9
                ):
                    print(f"{path}: {name} recomputed {value}, report {theirs}", file=sys.stderr)
                    sys.exit(1)
            checked += 1
    if checked == 0:
        print("no activity task in the report", file=sys.stderr)
        sys.exit(1)
    print(f"checked {checked} task results")


if __name__ == "__main__":
    main()
