"""The NDT1 training step of spec §2 in PyTorch: the reference `mtm bench step` compares
against (not part of CI; needs torch). CPU by default; `--device cuda` times it on a GPU
(synchronised around every step), with `--dtype bf16` under torch.autocast (fp32 master
weights and AdamW state, as mtm's `train.precision` describes).

Same architecture op for op as mtm's burn model: per-session stitcher N->C, Linear C->2C,
softsign, Linear 2C->D, learned positions, session + prompt tokens, pre-LN layers with a
fused QKV projection, softmax attention with dropout on the weights, GELU MLP, final
LayerNorm, head D->N; masked Poisson loss (mean); AdamW. Prints one JSON line.

usage: torch_ndt1_step.py --batch 16 --units 668 --stitch-dim 668 --hidden 512 --layers 5
       --heads 8 --mlp 1024 --bins 100 --steps 10 --warmup 2 --threads 2
       [--device cpu|cuda] [--dtype fp32|bf16]
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, mlp, p):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp_in = nn.Linear(d, mlp)
        self.mlp_out = nn.Linear(mlp, d)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        b, l, d = x.shape
        hw = d // self.heads
        q, k, v = self.qkv(self.attn_norm(x)).split(d, dim=2)
        q, k, v = (t.reshape(b, l, self.heads, hw).transpose(1, 2) for t in (q, k, v))
        w = self.drop(torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hw), dim=3))
        ctx = (w @ v).transpose(1, 2).reshape(b, l, d)
        x = x + self.drop(self.attn_out(ctx))
        return x + self.drop(self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)))))


class Ndt1(nn.Module):
    def __init__(self, n, c, d, layers, heads, mlp, bins, p=0.4, p_embed=0.2):
        super().__init__()
        self.stitcher = nn.Linear(n, c)
        self.embed_in = nn.Linear(c, 2 * c)
        self.embed_out = nn.Linear(2 * c, d)
        self.embed_drop = nn.Dropout(p_embed)
        self.positions = nn.Parameter(torch.randn(bins, d) * 0.02)
        self.session = nn.Parameter(torch.randn(1, d) * 0.02)
        self.prompts = nn.Parameter(torch.randn(5, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, mlp, p) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n)

    def forward(self, x, prompt):
        b, t, _ = x.shape
        h = self.embed_out(F.softsign(self.embed_in(self.stitcher(x))))
        h = self.embed_drop(h + self.positions[:t])
        prefix = torch.cat([self.session, self.prompts[prompt : prompt + 1]]).expand(b, 2, -1)
        h = torch.cat([prefix, h], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, 2:])


def main():
    a = argparse.ArgumentParser()
    for name, default in [("batch", 16), ("units", 668), ("stitch-dim", 668), ("hidden", 512),
                          ("layers", 5), ("heads", 8), ("mlp", 1024), ("bins", 100),
                          ("steps", 10), ("warmup", 2), ("threads", 2)]:
        a.add_argument(f"--{name}", type=int, default=default)
    a.add_argument("--device", default="cpu", help="cpu or cuda")
    a.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = a.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Ndt1(args.units, args.stitch_dim, args.hidden, args.layers, args.heads, args.mlp,
                 args.bins).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    counts = torch.poisson(torch.full((args.batch, args.bins, args.units), 0.3)).to(device)
    scored = (torch.rand(args.batch, 1, args.units) < 0.3).float().expand_as(counts).to(device)
    x = counts * (1 - scored)
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    times = []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            log_rates = model(x, 0)
        log_rates = log_rates.float()
        loss = ((log_rates.exp() - counts * log_rates) * scored).sum() / scored.sum()
        optim.zero_grad()
        loss.backward()
        optim.step()
        loss.item()
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"torch": torch.__version__, "threads": args.threads, "params": params,
                      "device": str(device), "dtype": args.dtype,
                      "step_s_median": statistics.median(times), "step_s_mean": statistics.mean(times)}))


if __name__ == "__main__":
    main()
