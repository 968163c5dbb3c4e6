"""Choose the sampler of a trained model on the validation split (never on test): mean TM-score of DDIM samples
for a grid of self-conditioning on/off × DDIM η × guidance weight w × truncation t_stop.

    python benchmarks/sampler_select.py --weights runs/fold/ckpt/last.pt --out runs/fold/val_selection/sampler_grid.json

Chains: a seeded random subset of the validation split at full length (up to --max-len); the same noise for every
setting (one generator seed per sample index), so the settings are compared on equal draws.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minifold.data import load_chain_set, collate, featurize, crop_window, default_data_paths   # noqa: E402
from minifold.metrics import tm_score                                                             # noqa: E402
from minifold.sampling import ddim_sample                                                          # noqa: E402
from minifold.structure_io import load_model                                                       # noqa: E402
from minifold.templates import sse_fractions                                                      # noqa: E402


def validation_args(doc: str, n_chains: int, threads: int = 2) -> argparse.ArgumentParser:
    "The arguments every validation-split benchmark shares (weights, data, chain subset); add your own after."
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--weights", required=True, help="trainer checkpoint, run folder or export_weights file")
    ap.add_argument("--data", default=None, help="chain_set.jsonl[.gz] (default: the shared pack)")
    ap.add_argument("--splits", default=None)
    ap.add_argument("--n-chains", type=int, default=n_chains)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def load_validation(args):
    "(model in eval mode, validation chains, indices of the seeded subset, featurized items) for `validation_args`."
    torch.set_num_threads(args.threads)
    model, _, _ = load_model(args.weights)
    data, splits = (args.data, args.splits) if args.data else default_data_paths("shared")
    if args.data and not splits: splits = Path(args.data).parent / "chain_set_splits.json"
    chains = list(load_chain_set(data, splits, split="validation"))
    keep = np.sort(np.random.default_rng(args.seed).choice(len(chains), min(args.n_chains, len(chains)), replace=False))
    return model, chains, keep, [featurize(chains[k], crop_window(len(chains[k]), args.max_len)) for k in keep]


def main(argv=None):
    ap = validation_args(__doc__, n_chains=60)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--t-stop", type=int, nargs="*", default=[0, 200, 300, 400])
    ap.add_argument("--eta", type=float, nargs="*", default=[0.0], help="DDIM η values (0 deterministic, 1 DDPM-like)")
    ap.add_argument("--guidance", type=float, nargs="*", default=[1.0],
                    help="classifier-free guidance weights w (1 = conditional only; the model must be trained with p_uncond > 0)")
    ap.add_argument("--self-cond", choices=["both", "on", "off"], default="both")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    model, chains, keep, items = load_validation(args)
    scs = {"both": (True, False), "on": (True,), "off": (False,)}[args.self_cond]
    grid = [(sc, eta, w, ts) for sc in scs for eta in args.eta for w in args.guidance for ts in args.t_stop]
    tms = {g: [] for g in grid}
    bonds = {g: [] for g in grid}   # mean consecutive Cα–Cα distance of the samples (Å): a shrunk x̂0 shows here
    helix = {g: [] for g in grid}   # P-SEA helix fraction of each sample: secondary structure the TM mean can hide
    helix_true = []
    t0 = time.time()
    for s in range(0, len(items), args.batch_size):
        b = collate(items[s:s + args.batch_size])
        cache = {}
        helix_true += [sse_fractions(b["ca"][i], b["ca_mask"][i])["helix"] for i in range(len(b["ca"]))]
        for g in grid:
            sc, eta, w, ts = g
            per = []
            for k in range(args.samples):
                r = ddim_sample(model, b, steps=args.steps, eta=eta, guidance=w, self_cond=sc, t_stop=ts, progress=False, cond_cache=cache,
                                generator=torch.Generator().manual_seed(args.seed + 1000 * k + s))
                per.append(tm_score(r["ca"].cpu(), b["ca"], b["ca_mask"].bool()))
                mm = (b["mask"][:, 1:] & b["mask"][:, :-1]).bool()
                bonds[g].append(float((r["ca"].cpu()[:, 1:] - r["ca"].cpu()[:, :-1]).norm(dim=-1)[mm].mean()))
                helix[g] += [sse_fractions(r["ca"][i].cpu(), b["ca_mask"][i])["helix"] for i in range(len(b["ca"]))]
            tms[g].append(torch.stack(per).mean(0))
        print(f"{min(s + args.batch_size, len(items))}/{len(items)} chains, {time.time() - t0:.0f} s", flush=True)
    rows = [{"self_cond": g[0], "eta": g[1], "guidance": g[2], "t_stop": g[3], "tm_mean": float(torch.cat(tms[g]).mean()),
             "ca_ca_mean": float(np.mean(bonds[g])), "helix_mean": float(np.mean(helix[g]))} for g in grid]
    for r in rows: print(f"self_cond={r['self_cond']!s:5s} η={r['eta']:.1f} w={r['guidance']:.1f} t_stop={r['t_stop']:4d}  TM {r['tm_mean']:.3f}  mean Cα–Cα "
                         f"{r['ca_ca_mean']:.2f} Å  helix {r['helix_mean']:.2f} (truth {np.mean(helix_true):.2f})")
    best = max(rows, key=lambda r: r["tm_mean"])
    print(f"best on validation: self_cond={best['self_cond']} η={best['eta']} w={best['guidance']} t_stop={best['t_stop']} (TM {best['tm_mean']:.3f})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "sampler_select", "weights": str(args.weights),
            "chains": [chains[k].name for k in keep], "samples": args.samples, "steps": args.steps, "rows": rows,
            "helix_truth_mean": float(np.mean(helix_true)),
            "best": best, "seconds": round(time.time() - t0, 1),
            "command": "python benchmarks/sampler_select.py " + " ".join(argv if argv is not None else sys.argv[1:])}, indent=1))
    return rows


if __name__ == "__main__":
    main()
