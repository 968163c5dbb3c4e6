"""Parsing ProMod3's structure DB (Debian promod3-data, 21,119 chains): minifold.data.read_structure_db against the 60 s goal.

Times, in this process, --repeats times each (median reported): the header + table of contents alone, all chains
(sequence, DSSP, N/CA/C/O in Å), all chains with their [L, 20] profiles, and the validation of every chain
(validate_structure_db_record: lengths, finiteness, bond lengths, Cα–Cα). With --build OUT it also runs the whole
pack build once (build_promod3_pack: read, validate, MMseqs2 homology filter, write chain_set.jsonl.gz) and records
its stage timings.

    python benchmarks/promod3_parse.py                                   # data/promod3/structure_db.dat (or --db PATH)
    python benchmarks/promod3_parse.py --out benchmarks/results/promod3_parse_cpu.json
    python benchmarks/promod3_parse.py --build /tmp/promod3_pack          # also time a full build (~2-3 min on 2 cores)
"""
import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path

from minifold.data import (build_promod3_pack, find_structure_db, read_structure_db, read_structure_db_header,
                           validate_structure_db_record)

GOAL_S = 60.0
ROOT = Path(__file__).resolve().parents[1]


def rel(p) -> str:
    "Repository-relative path when inside the checkout (results files carry no machine-specific prefix)."
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def timed(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="structure_db.dat (default: $MINIFOLD_PROMOD3_DB, data/promod3/structure_db.dat, "
                                               "/usr/share/promod3/loop_data/structure_db.dat)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--build", default=None, help="also time a full build_promod3_pack into this folder")
    ap.add_argument("--threads", type=int, default=2, help="mmseqs threads for --build")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--note", default=None, help="free text stored with the numbers (e.g. machine load)")
    a = ap.parse_args()
    db = Path(a.db) if a.db else find_structure_db()
    if db is None or not db.is_file():
        raise SystemExit("no structure_db.dat: `apt-get download promod3-data` then "
                         "`minifold-build-promod3 --deb promod3-data_*.deb --out data/promod3` (or pass --db)")
    res = {"structure_db": rel(db), "bytes": db.stat().st_size, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
           "python": platform.python_version(), "goal_s": GOAL_S, "repeats": a.repeats,
           **({"note": a.note} if a.note else {})}
    t_h, ts_h, h = timed(lambda: read_structure_db_header(db), a.repeats)
    t_p, ts_p, recs = timed(lambda: read_structure_db(db), a.repeats)
    t_f, ts_f, _ = timed(lambda: read_structure_db(db, profiles=True), a.repeats)
    t_v, ts_v, reasons = timed(lambda: Counter(validate_structure_db_record(r) for r in recs), a.repeats)
    n, n_res = len(recs), sum(len(r["seq"]) for r in recs)
    res.update({"n_chains": n, "n_residues": n_res,
                "header_toc_s": round(t_h, 3), "parse_all_s": round(t_p, 3), "parse_all_profiles_s": round(t_f, 3),
                "validate_all_s": round(t_v, 3), "parse_and_validate_s": round(t_p + t_v, 3),
                "chains_per_s": round(n / t_p), "residues_per_s": round(n_res / t_p),
                "runs_s": {"header": [round(t, 3) for t in ts_h], "parse": [round(t, 3) for t in ts_p],
                           "parse_profiles": [round(t, 3) for t in ts_f], "validate": [round(t, 3) for t in ts_v]},
                "validation": {str(k): v for k, v in sorted(reasons.items(), key=lambda kv: str(kv[0]))}})
    print(f"{db} ({res['bytes'] / 1e6:.0f} MB): {n} chains, {n_res} residues")
    print(f"  header + table of contents  {t_h:7.3f} s")
    print(f"  parse all chains            {t_p:7.3f} s   ({n / t_p:,.0f} chains/s)   goal < {GOAL_S:.0f} s: "
          f"{'met' if t_p < GOAL_S else 'NOT met'}")
    print(f"  parse all + profiles        {t_f:7.3f} s")
    print(f"  validate all chains         {t_v:7.3f} s   → {dict(reasons)}")
    if a.build:
        t0 = time.perf_counter()
        rep = build_promod3_pack(db, a.build, threads=a.threads, verbose=True)
        res["build"] = {"out": rel(a.build), "total_s": round(time.perf_counter() - t0, 1), "stages_s": rep["seconds"],
                        "final_train": rep["final_train"], "final_validation": rep["final_validation"],
                        "final_test": rep["final_test"], "removed_total": rep["removed_total"]}
        print(f"  full build (read, validate, homology filter, write)  {res['build']['total_s']:.0f} s: {rep['seconds']}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
