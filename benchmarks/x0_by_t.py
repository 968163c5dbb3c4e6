"""What the denoiser does at each noise level, on the validation split: for t across the schedule, noise the true
chain to t, denoise once (no self-conditioning) and score x̂0 against the truth, beside the naive estimate x_t/√ᾱ.

    python benchmarks/x0_by_t.py --weights data/weights/fold.pt --data data/promod3/chain_set.jsonl.gz \
        --out benchmarks/results/x0_by_t_fold.json

A denoiser that only copies its input scores x̂0 ≈ x_t/√ᾱ at low t; one that has learned local geometry beats it,
keeps consecutive Cα near 3.8 Å and shows the truth's P-SEA helix fraction.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minifold.config import to_angstrom                                                            # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from minifold.data import collate                                                                 # noqa: E402
from minifold.metrics import tm_score                                                             # noqa: E402
from minifold.sampling import predict_x0                                                           # noqa: E402
from minifold.templates import sse_fractions                                                      # noqa: E402
from sampler_select import validation_args, load_validation                                       # noqa: E402


def _ca_ca(x, mask):
    "Mean consecutive Cα–Cα distance (Å) over adjacent observed pairs of a batch `[B, L, 3]` (Å)."
    mm = mask[:, 1:] & mask[:, :-1]
    return float((x[:, 1:] - x[:, :-1]).norm(dim=-1)[mm].mean())


def main(argv=None):
    ap = validation_args(__doc__, n_chains=48, threads=1)
    ap.add_argument("--t", type=int, nargs="*", default=[25, 50, 100, 200, 300, 450, 600, 800, 950])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    model, chains, keep, items = load_validation(args)
    abar = model.schedule.alphas_cumprod
    t0, rows, helix_true = time.time(), [], []
    batches = [collate(items[s:s + args.batch_size]) for s in range(0, len(items), args.batch_size)]
    for b in batches:
        m = b["ca_mask"].bool()
        helix_true += [sse_fractions(b["ca"][i], m[i])["helix"] for i in range(len(m))]
    for t in args.t:
        tm_x0, tm_in, hel, caca = [], [], [], []
        for j, b in enumerate(batches):
            m = b["ca_mask"].bool() & b["mask"].bool()
            r = predict_x0(model, b, t=t, generator=torch.Generator().manual_seed(args.seed + 7919 * j + t))
            naive = to_angstrom(r["x_t"].cpu() / abar[t].sqrt())
            tm_x0.append(tm_score(r["ca"].cpu(), b["ca"], m)); tm_in.append(tm_score(naive, b["ca"], m))
            hel += [sse_fractions(r["ca"][i].cpu(), m[i])["helix"] for i in range(len(m))]
            caca.append(_ca_ca(r["ca"].cpu(), m))
        row = {"t": t, "sigma_A": float(to_angstrom(((1 - abar[t]) / abar[t]).sqrt())),
               "tm_x0": float(torch.cat(tm_x0).mean()), "tm_naive": float(torch.cat(tm_in).mean()),
               "helix_x0": float(np.mean(hel)), "ca_ca_x0": float(np.mean(caca))}
        rows.append(row)
        print(f"t={t:4d} σ={row['sigma_A']:6.2f} Å  TM x̂0 {row['tm_x0']:.3f}  x_t/√ᾱ {row['tm_naive']:.3f}  "
              f"helix {row['helix_x0']:.2f} (truth {np.mean(helix_true):.2f})  Cα–Cα {row['ca_ca_x0']:.2f} Å", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "x0_by_t", "weights": str(args.weights),
            "chains": [chains[k].name for k in keep], "rows": rows, "helix_truth_mean": float(np.mean(helix_true)),
            "seconds": round(time.time() - t0, 1),
            "command": "python benchmarks/x0_by_t.py " + " ".join(argv if argv is not None else sys.argv[1:])}, indent=1))
    return rows


if __name__ == "__main__":
    main()
