"""Long-range contact precision of two Stage-1 encoders on the same test chains (paired bootstrap of the gain).

    python benchmarks/encoder_compare.py --a data/weights/encoder_cpu.pt --b data/weights/encoder_fold.pt \
        --out benchmarks/results/encoder_fold_vs_cpu_test.json

Both encoders see the shared pack's 230 test chains (centre crops of 125, as the Stage-1 notebook) and are scored with
`minifold.metrics.top_l_precision` at |i−j| >= 24 (top-L), plus medium range (12–23) for context.
"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minifold.data import load_chain_set, default_data_paths                           # noqa: E402
from minifold.encoder import load_frozen_encoder, predict_chains                        # noqa: E402
from minifold.metrics import top_l_precision                                           # noqa: E402


def per_chain_top_l(preds, lo, hi=None):
    "Per-chain top-L precision at |i−j| >= lo (and <= hi) from `predict_chains` dicts."
    out = []
    for r in preds:
        y, m = torch.as_tensor(r["contacts"]).float(), torch.as_tensor(r["contact_mask"]).bool()
        L = y.shape[0]
        sep = (torch.arange(L)[:, None] - torch.arange(L)[None, :]).abs()
        if hi is not None: m = m & (sep <= hi)
        p = torch.as_tensor(r["probs"]).float()
        out.append(float(top_l_precision(p[None], y[None], m[None], min_sep=lo)[0]))
    return np.array(out)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True); ap.add_argument("--b", required=True)
    ap.add_argument("--data", default=None); ap.add_argument("--splits", default=None)
    ap.add_argument("--max-len", type=int, default=125); ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data, splits = (args.data, args.splits) if args.data else default_data_paths("shared")
    chains = list(load_chain_set(data, splits, split="test"))
    res = {"data": str(data), "n_chains": len(chains), "max_len": args.max_len,
           "command": "python benchmarks/encoder_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    scores = {}
    for k in ("a", "b"):
        t = time.time()
        enc = load_frozen_encoder(getattr(args, k))
        preds = predict_chains(enc, chains, max_len=args.max_len)
        scores[k] = {"long": per_chain_top_l(preds, 24), "medium": per_chain_top_l(preds, 12, 23)}
        res[k] = {"weights": getattr(args, k), "seconds": round(time.time() - t, 1),
                  **{f"top_L_{r}": float(np.nanmean(v)) for r, v in scores[k].items()}}
    d = scores["b"]["long"] - scores["a"]["long"]
    d = d[np.isfinite(d)]
    idx = np.random.default_rng(0).integers(0, len(d), (10000, len(d)))
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    res["gain_long_b_minus_a"] = {"mean": float(d.mean()), "ci95": [float(lo), float(hi)], "n_chains": int(len(d)),
                                  "bootstrap": "paired over chains, 10,000 resamples, percentile"}
    print(json.dumps(res, indent=1))
    if args.out: Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
