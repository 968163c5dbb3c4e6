"""Paired comparison of a model's test TM-scores with the baselines of issue 12 (ideal α-helix, shared-pack template),
chain by chain, with 95 % bootstrap intervals of the mean difference, overall and per secondary-structure class.

    python benchmarks/paired_baselines.py --eval runs/fold_v5/eval.csv --out runs/fold_v5/paired_baselines.json

`--eval` is an `nbs/evaluate.ipynb` eval.csv (its `ddim` rows are the model's first sample per chain, its
`ideal_helix` rows the helix); the template TM per chain comes from `benchmarks/template_baseline.py`'s JSON
(`per_chain`). Chains are matched by name; a chain missing from either side is an error, not a silent drop.
"""
import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_features import paired_bootstrap                                                    # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", required=True, help="eval.csv of nbs/evaluate.ipynb")
    ap.add_argument("--template", default="benchmarks/results/template_baseline_test.json")
    ap.add_argument("--method", default="ddim", help="the model's rows in eval.csv")
    ap.add_argument("--n-boot", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    ev = pd.read_csv(a.eval)
    tm = ev[ev.method.isin([a.method, "ideal_helix"])].pivot_table(index=["name", "sse_class"], columns="method", values="tm")
    tm = tm.reset_index().set_index("name")
    tpl = pd.DataFrame(json.loads(Path(a.template).read_text())["per_chain"]).set_index("name")
    if set(tm.index) != set(tpl.index):
        sys.exit(f"chains differ: {len(set(tm.index) - set(tpl.index))} only in {a.eval}, "
                 f"{len(set(tpl.index) - set(tm.index))} only in {a.template}")
    tm["template"] = tpl.tm
    rows = []
    for cls in ["overall", *sorted(tm.sse_class.unique())]:
        q = tm if cls == "overall" else tm[tm.sse_class == cls]
        for base in ("ideal_helix", "template"):
            r = {"class": cls, "n": len(q), "baseline": base, "model_tm": float(q[a.method].mean()),
                 "baseline_tm": float(q[base].mean()), **paired_bootstrap(q[a.method], q[base], a.n_boot, a.seed)}
            rows.append(r)
            print(f"{cls:16s} n={r['n']:3d}  model {r['model_tm']:.3f} vs {base:11s} {r['baseline_tm']:.3f}: "
                  f"{r['mean']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]")
    if a.out:
        Path(a.out).write_text(json.dumps({"benchmark": "paired_baselines", "eval": a.eval, "template": a.template,
                                           "method": a.method, "n_boot": a.n_boot, "rows": rows,
                                           "command": "python benchmarks/paired_baselines.py " + " ".join(argv or sys.argv[1:])}, indent=1))


if __name__ == "__main__":
    main()
