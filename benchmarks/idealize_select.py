"""Choose the knobs of the Cα refinement (`minifold.idealize.idealize_ca`) on the validation split (never on test):
sample each chain once per seed with the weights' own sampler (η, w, self-conditioning, t_stop; `--steps` DDIM steps), then score the raw samples and every refinement
setting on the same samples (the refinement is a post-processing of the sample, so the grid costs no extra sampling).

    python benchmarks/idealize_select.py --weights data/weights/fold.pt --data data/promod3/chain_set.jsonl.gz \
        --n-chains 150 --geometry --out benchmarks/results/idealize_select_val.json

A setting is kmax:w_helix:cutoff:extend (see `idealize_ca`). `--geometry` also prints Cα(i)–Cα(i+k) percentiles of the
samples against the truth (k = 1, 3, 4), the local-geometry measurement that motivates the refinement.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_select import validation_args, load_validation                                     # noqa: E402
from minifold.data import collate                                                                  # noqa: E402
from minifold.idealize import idealize_ca                                                          # noqa: E402
from minifold.metrics import tm_score                                                              # noqa: E402
from minifold.sampling import ddim_sample                                                          # noqa: E402

DEFAULT_GRID = ["4:5:12:0", "8:20:12:0", "8:20:8:0", "8:20:8:1", "12:20:8:1", "8:20:8:2"]
PCTS = (10, 25, 50, 75, 90)


def parse_setting(s: str) -> dict:
    try: kmax, wh, cut, ext = s.split(":"); return dict(kmax=int(kmax), w_helix=float(wh), cutoff=float(cut), extend=int(ext))
    except ValueError: raise SystemExit(f"bad setting {s!r}: expected kmax:w_helix:cutoff:extend, e.g. 8:20:8:1")


def local_distances(ca, mask, k: int) -> torch.Tensor:
    "Cα(i)–Cα(i+k) distances [n] over pairs of real residues of a batch [B, L, 3]."
    return (ca[:, k:] - ca[:, :-k]).norm(dim=-1)[(mask[:, k:] & mask[:, :-k]).bool()]


def main(argv=None):
    ap = validation_args(__doc__, n_chains=150)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50, as minifold-sample and the evaluation)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--settings", nargs="*", default=DEFAULT_GRID, help="kmax:w_helix:cutoff:extend, e.g. 8:20:8:1")
    ap.add_argument("--geometry", action="store_true", help="print Cα(i)–Cα(i+k) percentiles, samples vs truth")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    settings = {s: parse_setting(s) for s in args.settings}
    model, chains, keep, items = load_validation(args)
    P = model.preset
    t0 = time.time()
    tms = {"raw": [], **{s: [] for s in settings}}
    secs = {s: 0.0 for s in settings}
    geo = {k: ([], []) for k in (1, 3, 4)}
    for s0 in range(0, len(items), args.batch_size):
        b = collate(items[s0:s0 + args.batch_size])
        ref, m = b["ca"], b["ca_mask"].bool()
        cache = {}
        for k in range(args.samples):
            r = ddim_sample(model, b, steps=args.steps, eta=P.ddim_eta, guidance=P.ddim_guidance, self_cond=P.ddim_self_cond,
                            t_stop=P.ddim_t_stop, progress=False, cond_cache=cache,
                            generator=torch.Generator().manual_seed(args.seed + 1000 * k + s0))
            ca = r["ca"].cpu()
            tms["raw"].append(tm_score(ca, ref, m))
            for kk in geo: geo[kk][0].append(local_distances(ca, m, kk)); geo[kk][1].append(local_distances(ref, m, kk))
            for s, kw in settings.items():
                t1 = time.time()
                tms[s].append(tm_score(idealize_ca(ca, r["mask"].cpu(), **kw), ref, m))
                secs[s] += time.time() - t1
        print(f"{min(s0 + args.batch_size, len(items))}/{len(items)} chains, {time.time() - t0:.0f} s", flush=True)
    n_samples = len(torch.cat(tms["raw"]))
    rows = [{"setting": s, **(settings.get(s) or {}), "tm_mean": float(torch.cat(v).mean()),
             "seconds_per_sample": (secs[s] / n_samples if s in secs else 0.0)} for s, v in tms.items()]
    for r in rows: print(f"{r['setting']:>12s}  TM {r['tm_mean']:.4f}  ({r['seconds_per_sample']:.2f} s per sample)")
    best = max(rows[1:], key=lambda r: r["tm_mean"]) if len(rows) > 1 else rows[0]
    print(f"best on validation: {best['setting']} (TM {best['tm_mean']:.4f}; raw {rows[0]['tm_mean']:.4f})")
    geometry = {}
    if args.geometry:
        for kk, (xs, ys) in geo.items():
            a, t = np.percentile(torch.cat(xs).numpy(), PCTS).round(2), np.percentile(torch.cat(ys).numpy(), PCTS).round(2)
            geometry[f"i,i+{kk}"] = {"samples": a.tolist(), "truth": t.tolist(), "percentiles": list(PCTS)}
            print(f"Cα(i)–Cα(i+{kk}) percentiles {PCTS}: samples {a.tolist()}  truth {t.tolist()}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "idealize_select", "weights": str(args.weights),
            "sampler": {"steps": args.steps, "eta": P.ddim_eta, "guidance": P.ddim_guidance, "self_cond": P.ddim_self_cond,
                        "t_stop": P.ddim_t_stop},
            "chains": [chains[k].name for k in keep], "samples": args.samples, "rows": rows, "best": best,
            "geometry": geometry, "seconds": round(time.time() - t0, 1),
            "command": "python benchmarks/idealize_select.py " + " ".join(argv if argv is not None else sys.argv[1:])}, indent=1))
    return rows


if __name__ == "__main__":
    main()
