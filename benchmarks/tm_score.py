"""Batched TM-score (minifold.metrics.tm_score) vs tmtools (TM-align, identity alignment) on the same pairs.

Pairs: every chain of the bundled sample (data/sample, Cα in Å) against noised copies of itself
(Gaussian noise σ in --noise Å per coordinate) plus pairs of different chains truncated to equal length.
Correspondence is by index in both tools (tmtools is given the identity alignment, like TM-align -I).
Prints pairs/s for each, the speed ratio and the largest |ΔTM|.

    python benchmarks/tm_score.py                       # CPU, all pairs
    python benchmarks/tm_score.py --device cuda --repeat 8
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from minifold.metrics import tm_score


def make_pairs(sample: Path, noise, seed=0, max_len=None):
    recs = [json.loads(l) for l in open(sample)]
    rng = np.random.default_rng(seed)
    pairs = []
    for r in recs:
        q = np.asarray(r["coords"]["CA"], dtype=np.float64)
        ok = np.isfinite(q).all(-1)
        q, seq = q[ok], "".join(c for c, o in zip(r["seq"], ok) if o)
        if max_len: q, seq = q[:max_len], seq[:max_len]
        for s in noise:
            pairs.append((q + rng.normal(size=q.shape) * s, q, seq))
    for a, b in zip(recs[0::2], recs[1::2]):
        qa, qb = (np.asarray(r["coords"]["CA"], dtype=np.float64) for r in (a, b))
        if not (np.isfinite(qa).all() and np.isfinite(qb).all()): continue
        L = min(len(qa), len(qb), max_len or 10 ** 9)
        pairs.append((qa[:L], qb[:L], b["seq"][:L]))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", default=str(Path(__file__).resolve().parents[1] / "data/sample/chain_set.jsonl"))
    ap.add_argument("--noise", default="0.5,1,2,4,8", help="comma-separated noise levels, Å")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="replicate the pair set this many times (bigger batches)")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--seed-stride", type=int, default=1, help="1 = exact TMscore seeds; k = every k-th fragment start")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tmtools import tm_align

    pairs = make_pairs(Path(args.sample), [float(x) for x in args.noise.split(",")], max_len=args.max_len)
    pairs = pairs * args.repeat
    n = len(pairs)
    Ls = [len(q) for _, q, _ in pairs]
    print(f"{n} index-aligned pairs, L = {min(Ls)}..{max(Ls)} (mean {np.mean(Ls):.0f}); torch threads = {args.threads}, device = {args.device}")

    t = time.perf_counter()
    ref = np.array([tm_align(p, q, s, s, [s, s]).tm_norm_chain2 for p, q, s in pairs])
    t_ref = time.perf_counter() - t

    Lmax = max(Ls)
    P = torch.zeros(n, Lmax, 3, dtype=torch.float64)
    Q = torch.zeros_like(P)
    M = torch.zeros(n, Lmax, dtype=torch.bool)
    for i, (p, q, _) in enumerate(pairs):
        P[i, :len(p)] = torch.from_numpy(p); Q[i, :len(q)] = torch.from_numpy(q); M[i, :len(q)] = True
    P, Q, M = P.to(args.device), Q.to(args.device), M.to(args.device)
    tm_score(P[:4], Q[:4], M[:4])                           # warm-up (allocator, CUDA context), not timed
    if args.device.startswith("cuda"): torch.cuda.synchronize()
    t = time.perf_counter()
    ours = tm_score(P, Q, M, chunk=args.chunk, seed_stride=args.seed_stride)
    if args.device.startswith("cuda"): torch.cuda.synchronize()
    t_ours = time.perf_counter() - t

    d = np.abs(ours.cpu().numpy().astype(np.float64) - ref)
    print(f"tmtools (TM-align, fixed identity alignment): {n / t_ref:9.1f} pairs/s  ({t_ref:.2f} s)")
    print(f"minifold.metrics.tm_score (batched, {args.device}, seed_stride={args.seed_stride}): {n / t_ours:9.1f} pairs/s  ({t_ours:.2f} s)")
    print(f"speed ratio ours/tmtools: {t_ref / t_ours:.1f}x")
    print(f"max |dTM| = {d.max():.5f}   mean |dTM| = {d.mean():.6f}   TM range {ref.min():.3f}..{ref.max():.3f}")


if __name__ == "__main__":
    main()
