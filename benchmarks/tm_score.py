"""Batched TM-score (minifold.metrics.tm_score) vs tmtools (TM-align, identity alignment) on the same pairs.

Pairs (real chains, Cα in Å): every chain of the bundled sample (data/sample) and the first --n-shared chains of the
shared pack (../shared/data/pdb_chains next to the checkout, if present) against noised copies of itself (Gaussian noise σ in --noise Å
per coordinate), plus pairs of different chains truncated to equal length. Correspondence is by index in both tools
(tmtools is given the identity alignment, like TM-align -I). Both are timed in this process, interleaved, --repeats
times; the medians are reported for tm_score(search="exact") and tm_score(search="fast"), each with the speed ratio
and the largest / mean |ΔTM| over all pairs.

    python benchmarks/tm_score.py                         # CPU (1 torch thread), sample + 60 shared chains
    python benchmarks/tm_score.py --device cuda --replicate 8
    python benchmarks/tm_score.py --out benchmarks/results/tm_score_cpu.json   # also keep the numbers as JSON
"""
import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch

from minifold.metrics import tm_score

ROOT = Path(__file__).resolve().parents[1]


def load_chains(path: Path, limit=None, max_len=None):
    "(Cα [L,3] float64 with non-finite residues removed, sequence) per chain of a CATH-4.2-style jsonl(.gz)."
    op = gzip.open if str(path).endswith(".gz") else open
    out = []
    with op(path, "rt") as f:
        for line in f:
            r = json.loads(line)
            q = np.asarray(r["coords"]["CA"], dtype=np.float64)
            ok = np.isfinite(q).all(-1)
            q, seq = q[ok], "".join(c for c, o in zip(r["seq"], ok) if o)
            if max_len: q, seq = q[:max_len], seq[:max_len]
            if len(q) >= 5: out.append((q, seq))
            if limit and len(out) >= limit: break
    return out


def make_pairs(chains, noise, seed=0):
    "Noised copies at every level in `noise` + consecutive chains paired and truncated to equal length."
    rng = np.random.default_rng(seed)
    pairs = [(q + rng.normal(size=q.shape) * s, q, seq) for q, seq in chains for s in noise]
    for (qa, _), (qb, sb) in zip(chains[0::2], chains[1::2]):
        L = min(len(qa), len(qb))
        pairs.append((qa[:L], qb[:L], sb[:L]))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", default=str(ROOT / "data/sample/chain_set.jsonl"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data" / "pdb_chains" / "chain_set.jsonl.gz"),
                    help="shared-pack chain set (default: ../shared/data/pdb_chains next to the checkout)")
    ap.add_argument("--n-shared", type=int, default=60, help="chains taken from the shared pack (0: none)")
    ap.add_argument("--noise", default="0.5,1,2,4,8", help="comma-separated noise levels, Å")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for ours (tmtools is single-threaded)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (median reported)")
    ap.add_argument("--replicate", type=int, default=1, help="replicate the pair set this many times (bigger batches)")
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--seed-stride", type=int, default=1, help="1 = exact TMscore seeds; k = every k-th fragment start")
    ap.add_argument("--out", default=None, help="write the results (and the machine) to this JSON file")
    args = ap.parse_args()
    from tmtools import tm_align

    noise = [float(x) for x in args.noise.split(",")]
    chains = load_chains(Path(args.sample), max_len=args.max_len)
    pairs = make_pairs(chains, noise)
    if args.n_shared and Path(args.shared).exists():
        pairs += make_pairs(load_chains(Path(args.shared), limit=args.n_shared, max_len=args.max_len), noise, seed=1)
    pairs = pairs * args.replicate
    n = len(pairs)
    Ls = [len(q) for _, q, _ in pairs]
    print(f"{n} index-aligned pairs, L = {min(Ls)}..{max(Ls)} (mean {np.mean(Ls):.0f}); "
          f"torch threads = {args.threads}, device = {args.device}")

    Lmax = max(Ls)
    P = torch.zeros(n, Lmax, 3, dtype=torch.float64)
    Q = torch.zeros_like(P)
    M = torch.zeros(n, Lmax, dtype=torch.bool)
    for i, (p, q, _) in enumerate(pairs):
        P[i, :len(p)] = torch.from_numpy(p); Q[i, :len(q)] = torch.from_numpy(q); M[i, :len(q)] = True
    P, Q, M = P.to(args.device), Q.to(args.device), M.to(args.device)
    cuda = args.device.startswith("cuda")
    threads = args.threads if not cuda else None
    tm_score(P[:4], Q[:4], M[:4], threads=threads)        # warm-up (allocator, CUDA context), not timed

    modes = ["exact", "fast"]
    t_ref, t_ours, ours = [], {m: [] for m in modes}, {}
    c_ref, c_ours = [], {m: [] for m in modes}              # process CPU time (less sensitive to other jobs' load)
    for _ in range(args.repeats):                           # interleaved: all see the same machine load
        t, c = time.perf_counter(), time.process_time()
        ref = np.array([tm_align(p, q, s, s, [s, s]).tm_norm_chain2 for p, q, s in pairs])
        t_ref.append(time.perf_counter() - t); c_ref.append(time.process_time() - c)
        for m in modes:
            if cuda: torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            ours[m] = tm_score(P, Q, M, seed_stride=args.seed_stride, threads=threads, search=m)
            if cuda: torch.cuda.synchronize()
            t_ours[m].append(time.perf_counter() - t); c_ours[m].append(time.process_time() - c)
    tr = float(np.median(t_ref))
    print(f"tmtools (TM-align, fixed identity alignment): {n / tr:9.1f} pairs/s  (median of {args.repeats}: {tr:.2f} s)")
    for m in modes:
        to = float(np.median(t_ours[m]))
        d = np.abs(ours[m].cpu().numpy().astype(np.float64) - ref)
        print(f"tm_score search={m!r:7} ({args.device}, seed_stride={args.seed_stride}): {n / to:9.1f} pairs/s  "
              f"(median {to:.2f} s)  ratio vs tmtools {tr / to:.2f}x (per repeat: "
              + ", ".join(f"{a / b:.2f}" for a, b in zip(t_ref, t_ours[m])) + f")  "
              f"max |dTM| = {d.max():.5f}  mean |dTM| = {d.mean():.6f}  (pairs > 0.005: {(d > 0.005).sum()})")
        if not cuda:
            print(f"    CPU-time ratio vs tmtools (median process_time): {np.median(c_ref) / np.median(c_ours[m]):.2f}x")
    print(f"TM range (tmtools) {ref.min():.3f}..{ref.max():.3f}")
    if args.out:
        import platform, sys
        res = dict(meta=dict(command="python " + " ".join(sys.argv), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                             torch=torch.__version__, device=args.device, threads=args.threads,
                             cpu=platform.processor() or platform.machine()),
                   pairs=n, L_min=min(Ls), L_max=max(Ls), L_mean=float(np.mean(Ls)),
                   tmtools=dict(pairs_per_s=n / tr, wall_s=t_ref, cpu_s=c_ref))
        for m in modes:
            to = float(np.median(t_ours[m])); d = np.abs(ours[m].cpu().numpy().astype(np.float64) - ref)
            res[f"ours_{m}"] = dict(pairs_per_s=n / to, wall_s=t_ours[m], cpu_s=c_ours[m], ratio_vs_tmtools=tr / to,
                                    cpu_time_ratio=float(np.median(c_ref) / np.median(c_ours[m])),
                                    max_abs_dtm=float(d.max()), mean_abs_dtm=float(d.mean()),
                                    pairs_over_0_005=int((d > 0.005).sum()))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
