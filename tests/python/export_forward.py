"""Reproduces an mtm export's forward pass with NumPy and the `safetensors` package only.

Usage: export_forward.py EXPORT_DIR [TOLERANCE]

Reads config.json and model.safetensors, runs the network described there on the input of
reference.safetensors, and compares the log-rates with the ones mtm wrote beside it for
each case (prompt token, causal or not). Written from config.json's description alone:
it is the proof that an export is usable without mtm. Exits non-zero on any mismatch.
"""

import json
import math
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

ERF = np.vectorize(math.erf)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, w, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def rotate(x, theta=10000.0):
    """Rotary positions: pair (2k, 2k+1) at position t turned by t / theta^(2k/h)."""
    _, _, length, h = x.shape
    k = np.arange(h // 2, dtype=np.float64)
    freq = 1.0 / theta ** (2.0 * k / h)
    angle = np.arange(length, dtype=np.float64)[:, None] * freq[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def forward(w, config, counts, session, prompt, causal):
    arch = config["architecture"]
    eps = config["computation"]["layer_norm_eps"]
    heads = arch["heads"]
    rotary = arch["positions"] == "rotary"
    batch, bins, _ = counts.shape
    if arch.get("input", "counts") == "log1p":
        counts = np.log1p(counts)
    x = linear(counts, w, f"sessions.{session}.stitcher")
    h = linear(x, w, "embed.in")
    x = linear(h / (1.0 + np.abs(h)), w, "embed.out")
    if not rotary:
        x = x + w["positions"][:bins]
    d = x.shape[-1]
    prefix = [np.broadcast_to(w["session_tokens"][session], (batch, 1, d))]
    if prompt is not None:
        prefix.append(np.broadcast_to(w["prompt_tokens"][prompt], (batch, 1, d)))
    x = np.concatenate(prefix + [x], axis=1)
    length = x.shape[1]
    hw = d // heads
    for layer in range(arch["layers"]):
        p = f"layers.{layer}"
        qkv = linear(
            layer_norm(x, w[p + ".attn_norm.weight"], w[p + ".attn_norm.bias"], eps),
            w,
            p + ".attn.qkv",
        )

        def split(i):
            part = qkv[..., i * d : (i + 1) * d]
            return part.reshape(batch, length, heads, hw).transpose(0, 2, 1, 3)

        q, k, v = split(0), split(1), split(2)
        if rotary:
            q, k = rotate(q), rotate(k)
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hw)
        if causal:
            later = np.triu(np.ones((length, length), dtype=bool), k=1)
            scores = np.where(later, -np.inf, scores)
        scores = scores - scores.max(-1, keepdims=True)
        weights = np.exp(scores)
        weights = weights / weights.sum(-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, d)
        x = x + linear(context, w, p + ".attn.out")
        m = linear(
            layer_norm(x, w[p + ".mlp_norm.weight"], w[p + ".mlp_norm.bias"], eps),
            w,
            p + ".mlp.in",
        )
        m = 0.5 * m * (1.0 + ERF(m / math.sqrt(2.0)))
        x = x + linear(m, w, p + ".mlp.out")
    x = layer_norm(x, w["final_norm.weight"], w["final_norm.bias"], eps)
    return linear(x[:, len(prefix) :], w, f"sessions.{session}.head")


def main():
    directory = sys.argv[1]
    tolerance = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-4
    config = json.load(open(f"{directory}/config.json"))
    assert config["format"] == "mtm-ndt1-export", config["format"]
    weights = {k: v.astype(np.float64) for k, v in load_file(f"{directory}/model.safetensors").items()}
    reference = load_file(f"{directory}/reference.safetensors")
    with safe_open(f"{directory}/reference.safetensors", framework="numpy") as f:
        meta = f.metadata()
    session = int(meta["session_index"])
    counts = reference["input"].astype(np.float64)
    checked, worst = 0, 0.0
    for name in sorted(k for k in reference if k.startswith("log_rates.")):
        prompt = None if meta[f"{name}.prompt"] == "none" else int(meta[f"{name}.prompt"])
        causal = meta[f"{name}.causal"] == "true"
        ours = forward(weights, config, counts, session, prompt, causal)
        theirs = reference[name].astype(np.float64)
        diff = float(np.max(np.abs(ours - theirs)))
        worst = max(worst, diff)
        if not diff <= tolerance:
            sys.exit(f"{name}: NumPy and mtm differ by {diff} (tolerance {tolerance})")
        checked += 1
    if checked == 0:
        sys.exit("reference.safetensors holds no log_rates")
    print(f"checked {checked} forward passes, max abs difference {worst:.2e}")


if __name__ == "__main__":
    main()
