"""Homology-template baseline (minifold.templates) on one split of a chain set: no model, template search only.

Every chain of --split (default test) is searched against the --db-split (default train) chains of the same file with
`TemplateDB` (biotite 3-mer prefilter, Smith-Waterman BLOSUM62 11/1, hit: E <= 1e-3, coverage >= 0.3, identity >= 0.25),
the hit is threaded onto it (`thread_template`) and scored against the truth (`score_threaded`: TM-score / GDT over the
whole chain, no hit = 0, RMSD NaN). Reported: hit count, mean TM over all chains (no hit = 0) and over the hits, the
same per SSE class of the true structure (`sse_class`: alpha / beta-containing / other) and per length bin, and how the
hit count and mean TM change with the E-value cut (coverage and identity cuts kept), from the same alignments.

    python benchmarks/template_baseline.py                         # shared pack (../shared/data/pdb_chains), test vs train
    python benchmarks/template_baseline.py --out benchmarks/results/template_baseline_test.json
    python benchmarks/template_baseline.py --max-len 96            # score centre crops, as nbs/evaluate.ipynb does
    python benchmarks/template_baseline.py --check-prefilter 115   # also align the first 115 queries with every DB chain
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from minifold.data import crop_window, load_chain_set
from minifold.report import length_bins
from minifold.templates import (MAX_EVALUE, MIN_COVERAGE, MIN_IDENTITY, SSE_CLASSES, TemplateDB, crop_chain,
                                score_threaded, sse_class, thread_template)

ROOT = Path(__file__).resolve().parents[1]
E_CUTS = (1e-10, 1e-5, 1e-3, 1e-2, 0.1, 1.0, 10.0, float("inf"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pdb_chains" / "chain_set.jsonl.gz"))
    ap.add_argument("--splits", default=None, help="chain_set_splits.json (default: next to --data)")
    ap.add_argument("--split", default="test", help="the queries")
    ap.add_argument("--db-split", default="train", help="the template database")
    ap.add_argument("--max-len", type=int, default=None, help="centre-crop queries to this length (default: whole chains)")
    ap.add_argument("--check-prefilter", type=int, default=0,
                    help="for the first N queries, also align against every DB chain and count hits the prefilter missed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the results as JSON")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_all = time.time()
    db_chains = list(load_chain_set(a.data, a.splits, split=a.db_split))
    queries = [crop_chain(c, crop_window(len(c), a.max_len)) for c in load_chain_set(a.data, a.splits, split=a.split)]
    t0 = time.time()
    db = TemplateDB(db_chains)
    t_build = time.time() - t0
    print(f"{a.data}: {len(queries)} {a.split} queries (L {min(len(q) for q in queries)}-{max(len(q) for q in queries)}), "
          f"{db}  [built in {t_build:.2f} s]")

    t0 = time.time()
    all_hits = [db.hits(q.seq, exclude=q.name) for q in queries]       # every aligned candidate, best score first
    t_search = time.time() - t0

    def pick(hits, max_e):
        return next((h for h in hits if h.passes(max_e, MIN_IDENTITY, MIN_COVERAGE)), None)

    truth = [torch.nan_to_num(torch.tensor(q.coords[:, 1], dtype=torch.float32)) for q in queries]
    obs = [torch.tensor(np.isfinite(q.coords[:, 1]).all(-1)) for q in queries]

    def run(max_e):
        chosen = [pick(h, max_e) for h in all_hits]
        cas, srcs = [], []
        for q, h in zip(queries, chosen):
            if h is None: cas.append(None); srcs.append(None)
            else:
                ca, s = thread_template(len(q.seq), h, db.chains[h.ref_id]); cas.append(ca); srcs.append(s)
        return chosen, score_threaded(cas, srcs, truth, obs)

    t0 = time.time()
    chosen, sc = run(MAX_EVALUE)
    t_score = time.time() - t0
    cls = [sse_class(t, m) for t, m in zip(truth, obs)]
    hit = np.array([h is not None for h in chosen])
    tm = sc["tm"]
    mean = lambda x: float(np.mean(x)) if len(x) else float("nan")

    per_class = {}
    for c in SSE_CLASSES:
        k = np.array([x == c for x in cls])
        per_class[c] = {"n": int(k.sum()), "hits": int((hit & k).sum()), "tm_mean": mean(tm[k]), "tm_mean_hits": mean(tm[hit & k])}
    bins = length_bins([len(q.seq) for q in queries])
    per_len = {}
    for b in bins.categories:
        k = np.asarray(bins == b)
        per_len[str(b)] = {"n": int(k.sum()), "hits": int((hit & k).sum()), "tm_mean": mean(tm[k])}
    sweep = []
    for e in E_CUTS:
        ch, s = (chosen, sc) if e == MAX_EVALUE else run(e)
        hh = np.array([h is not None for h in ch])
        sweep.append({"max_evalue": e if np.isfinite(e) else "inf", "hits": int(hh.sum()), "tm_mean": mean(s["tm"]),
                      "tm_mean_hits": mean(s["tm"][hh])})
    # how often a significant best alignment fails the other two cuts
    best = [h[0] if h else None for h in all_hits]
    sig = [b for b in best if b is not None and b.evalue <= MAX_EVALUE]
    n_sig_fail = sum(1 for b in sig if not b.passes())

    res = {
        "command": " ".join(["python benchmarks/template_baseline.py", *sys.argv[1:]]),
        "data": str(Path(a.data).resolve().relative_to(ROOT.parent)) if str(Path(a.data).resolve()).startswith(str(ROOT.parent)) else a.data,
        "split": a.split, "db_split": a.db_split, "max_len": a.max_len,
        "n_queries": len(queries), "n_db_chains": len(db), "db_residues": db.db_residues,
        "thresholds": {"max_evalue": MAX_EVALUE, "min_coverage": MIN_COVERAGE, "min_identity": MIN_IDENTITY,
                       "k": db.k, "top_n": db.top_n, "min_diagonal_hits": db.min_diagonal_hits,
                       "scoring": "BLOSUM62, gaps open 11 / extend 1 (biotite (-12, -1)), lambda 0.267, K 0.041"},
        "hits": int(hit.sum()),
        "tm_mean_all": mean(tm), "tm_median_all": float(np.median(tm)), "tm_mean_hits": mean(tm[hit]),
        "gdt_ts_mean_all": mean(sc["gdt_ts"]), "rmsd_mean_hits": mean(sc["rmsd"][hit]),
        "identity_mean_hits": mean([h.identity for h in chosen if h]), "coverage_mean_hits": mean([h.coverage for h in chosen if h]),
        "placed_mean_hits": mean(sc["placed"][hit]),
        "significant_best_failing_coverage_or_identity": n_sig_fail,
        "per_sse_class": per_class, "per_length_bin": per_len, "evalue_sweep": sweep,
        "per_chain": [{"name": q.name, "sse_class": c, "hit": bool(h), "tm": float(t)}          # for paired comparisons
                      for q, c, h, t in zip(queries, cls, hit, tm)],
        "seconds": {"db_build": round(t_build, 2), "search": round(t_search, 2), "thread_and_score": round(t_score, 2),
                    "total": round(time.time() - t_all, 1)},
        "machine": f"{platform.processor() or platform.machine()}, torch threads {a.threads}",
    }
    if a.check_prefilter:
        t0 = time.time()
        n = min(a.check_prefilter, len(queries))
        brute = 0; pref = 0
        for q, hs in zip(queries[:n], all_hits[:n]):
            full = [db.align(q.seq, j) for j in range(len(db)) if db.names[j] != q.name]
            brute += any(h.passes() for h in full); pref += any(h.passes() for h in hs)
        res["prefilter_check"] = {"queries": n, "hits_all_vs_all": brute, "hits_prefilter": pref, "seconds": round(time.time() - t0, 1)}
    print(f"hits: {res['hits']} of {len(queries)}; mean TM {res['tm_mean_all']:.3f} over all (no hit = 0), "
          f"{res['tm_mean_hits']:.3f} over hits; mean identity {res['identity_mean_hits']:.2f}, coverage {res['coverage_mean_hits']:.2f}")
    for c, d in per_class.items():
        print(f"  {c:16s} n={d['n']:4d} hits={d['hits']:4d} TM mean {d['tm_mean']:.3f} (hits only {d['tm_mean_hits']:.3f})")
    for b, d in per_len.items():
        print(f"  length {b:6s} n={d['n']:4d} hits={d['hits']:4d} TM mean {d['tm_mean']:.3f}")
    print("  E-value cut sweep: " + "; ".join(f"E≤{d['max_evalue']}: {d['hits']} hits, TM {d['tm_mean']:.3f}" for d in sweep))
    if "prefilter_check" in res: print(f"  prefilter check: {res['prefilter_check']}")
    print(f"  significant best alignments failing coverage/identity: {n_sig_fail}; time {res['seconds']}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
