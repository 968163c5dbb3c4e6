"""Sequence profiles as an encoder input (issue 13, item 3): does `EncoderPreset.profile` help the Stage-1 encoder?

Two `cpu`-preset ContactClassifiers that differ only in `profile` (the profile encoder has one extra zero-initialised
20 → 128 projection, created after every other weight, so both start from the same function) are trained with the
same seed, the same ProMod3 chains and the same budget, and compared on **held-out ProMod3 chains** (the pack's
validation/test chains come from CATH/PDB and have no real profile) by long-range (|i−j| ≥ 24) top-L contact
precision (`minifold.metrics.top_l_precision` through `encoder.contact_map_scores`, 125-residue centred crops as in
`runs/encoder_cpu/test_summary.json`), with a paired bootstrap interval over the held-out chains.

Chains: the pack's train split (data/promod3/chain_set_splits.json) is permuted with --seed; the first --n-heldout
chains are the evaluation set, the next --n-val the validation set (best-epoch selection, same for both), and the
training set is the first --n-train of the rest that have no MMseqs2 hit (>= 30 % identity, >= 50 % coverage, as
the pack's own filter) to a held-out or validation chain. Profiles: data/promod3/profiles.npz
(`minifold.data.write_promod3_profiles()`); every train/validation/held-out chain has a real one (checked).

    python benchmarks/profile_features.py --out benchmarks/results/profile_features_cpu.json

The two trainings run as two processes with one torch thread each (--jobs 2); results also report, for context, the
separation prior P(contact | |i−j|) of the training chains and the profile encoder given one-hot profiles only.
"""
import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LONG_SEP = 24


def rel(p) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def paired_bootstrap(a, b, n_boot=10_000, seed=0, level=0.95):
    "Mean of the per-chain a − b and its percentile bootstrap interval (chains resampled, NaN pairs dropped)."
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    lo, hi = np.quantile(d[idx].mean(1), [(1 - level) / 2, (1 + level) / 2])
    return dict(mean=float(d.mean()), ci95=[float(lo), float(hi)], n_chains=int(len(d)),
                frac_boot_positive=float((d[idx].mean(1) > 0).mean()))


def separation_prior(chains, max_len):
    "P(contact | |i−j|) over centred crops of `chains` (the baseline of nbs/11_train_encoder)."
    from minifold.data import crop_window, featurize
    pos, tot = np.zeros(max_len + 1), np.zeros(max_len + 1)
    for c in chains:
        f = featurize(c, crop_window(len(c), max_len))
        y, m = f["contacts"].numpy(), f["contact_mask"].numpy().astype(bool)
        L = len(y)
        i, j = np.triu_indices(L, 1)
        s, keep = j - i, m[i, j]
        np.add.at(pos, s[keep], y[i, j][keep]); np.add.at(tot, s[keep], 1)
    prior = np.where(tot > 0, pos / np.maximum(tot, 1), np.nan)
    last = 0.0
    for s in range(len(prior)):
        if np.isnan(prior[s]): prior[s] = last
        else: last = prior[s]
    return prior


def top_l_long(preds):
    from minifold.encoder import contact_map_scores
    return {r["name"]: contact_map_scores(r, long_sep=LONG_SEP)["top_l"] for r in preds}


def train_one(a):
    "Child process: train one variant into <work>/<variant>."
    import torch
    torch.set_num_threads(a.threads)
    from minifold.config import get_encoder_preset
    from minifold.encoder import train_encoder
    on = a.train_one == "profile"
    p = get_encoder_preset("cpu", profile=on)
    t0 = time.time()
    r = train_encoder(data_path=Path(a.work) / "chains.npz", splits_path=Path(a.work) / "splits.json", preset=p,
                      epochs=a.epochs, max_len=a.max_len, seed=a.seed, out_dir=Path(a.work) / a.train_one,
                      threads=a.threads, resume=False, progress=False, verbose=True,
                      profiles=Path(a.profiles) if on else None)
    (Path(a.work) / a.train_one / "done.json").write_text(json.dumps(dict(
        wall_s=round(time.time() - t0, 1), best_epoch=r["best_epoch"], best_val=r["best_val"], rows=r["rows"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default=str(ROOT / "data" / "promod3"), help="built ProMod3 pack folder")
    ap.add_argument("--profiles", default=None, help="profiles .npz (default: <pack>/profiles.npz)")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-val", type=int, default=150)
    ap.add_argument("--n-heldout", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=64, help="training crop")
    ap.add_argument("--eval-max-len", type=int, default=125, help="centred evaluation crop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--jobs", type=int, default=2, help="train the two encoders in parallel processes (1: one after the other)")
    ap.add_argument("--no-homology-filter", action="store_true")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default=None, help="results JSON")
    ap.add_argument("--train-one", choices=["sequence", "profile"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.profiles = a.profiles or str(Path(a.pack) / "profiles.npz")
    if a.train_one: return train_one(a)
    import torch
    torch.set_num_threads(a.threads)
    from minifold.data import load_chain_set, load_profiles, mmseqs_hits, read_splits, write_chain_pack
    from minifold.encoder import load_frozen_encoder, predict_chains
    command = "python " + " ".join(shlex.quote(x) for x in [rel(__file__)] + sys.argv[1:])
    t_start = time.time()
    work = Path(a.work or tempfile.mkdtemp(prefix="minifold_profile_features_")); work.mkdir(parents=True, exist_ok=True)
    pack, splits_path = Path(a.pack) / "chain_set.jsonl.gz", Path(a.pack) / "chain_set_splits.json"
    if not pack.is_file() or not Path(a.profiles).is_file():
        raise SystemExit(f"needs {pack} and {a.profiles}: build the pack (README, ProMod3 section), then "
                         "`python -c 'from minifold.data import write_promod3_profiles; write_promod3_profiles()'`")
    # --- chains: held-out / validation / train, all from the pack's train split (ProMod3, real profiles) ---
    names = sorted(read_splits(splits_path)["train"])
    perm = [names[i] for i in np.random.default_rng(a.seed).permutation(len(names))]
    held, val = perm[:a.n_heldout], perm[a.n_heldout:a.n_heldout + a.n_val]
    pool = perm[a.n_heldout + a.n_val:]
    t0 = time.time()
    chains = {c.name: c for c in load_chain_set(pack, splits_path, "train")}
    t_load = time.time() - t0
    cand = pool[:int(a.n_train * 1.3) + 200]
    removed = set()
    if not a.no_homology_filter:
        t0 = time.time()
        hits = mmseqs_hits({n: chains[n].seq for n in cand}, {n: chains[n].seq for n in held + val}, threads=2)
        removed = {h["query"] for h in hits}
        t_mm = time.time() - t0
        print(f"homology filter: {len(removed)} of {len(cand)} candidates hit a held-out/validation chain ({t_mm:.0f} s)")
    train = [n for n in cand if n not in removed][:a.n_train]
    if len(train) < a.n_train: raise SystemExit(f"only {len(train)} train chains left after the filter")
    write_chain_pack([chains[n] for n in train + val + held], work / "chains.npz")
    (work / "splits.json").write_text(json.dumps({"train": train, "validation": val, "test": held}))
    prof = load_profiles(a.profiles, names=train + val + held)
    missing = [n for n in train + val + held if n not in prof]
    if missing: raise SystemExit(f"{len(missing)} chains have no real profile in {a.profiles}, e.g. {missing[:3]}")
    print(f"train {len(train)} / validation {len(val)} / held-out {len(held)} ProMod3 chains, all with a real profile; "
          f"work folder {work}")
    # --- the two trainings (same seed, data, budget) ---
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    base = [sys.executable, __file__, "--work", str(work), "--profiles", a.profiles, "--epochs", str(a.epochs),
            "--max-len", str(a.max_len), "--seed", str(a.seed), "--threads", str(a.threads)]
    t0 = time.time()
    procs = []
    for v in ("sequence", "profile"):
        log = open(work / f"{v}.log", "w")
        procs.append((v, subprocess.Popen(base + ["--train-one", v], stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if a.jobs < 2: procs[-1][1].wait()
    for v, pr, log in procs:
        if pr.wait() != 0: raise SystemExit(f"training {v} failed; see {work / (v + '.log')}")
        log.close()
    t_train = time.time() - t0
    runs = {v: json.loads((work / v / "done.json").read_text()) for v in ("sequence", "profile")}
    cfg = {v: json.loads((work / v / "config.json").read_text()) for v in ("sequence", "profile")}
    # --- evaluation on the held-out chains ---
    held_chains = [chains[n] for n in held]
    m_seq = load_frozen_encoder(work / "sequence" / "ckpt" / "best.pt")
    m_prof = load_frozen_encoder(work / "profile" / "ckpt" / "best.pt")
    t0 = time.time()
    p_seq = predict_chains(m_seq, held_chains, max_len=a.eval_max_len)
    p_prof = predict_chains(m_prof, held_chains, max_len=a.eval_max_len, profiles=prof)
    p_fb = predict_chains(m_prof, held_chains, max_len=a.eval_max_len)          # one-hot fallback for every chain
    assert m_prof.n_profile_fallback > 0 and m_seq.profile_proj is None
    prior = separation_prior([chains[n] for n in train], a.eval_max_len)
    rng = np.random.default_rng(a.seed)
    p_sep = [dict(r, probs=prior[np.minimum(np.abs(np.subtract.outer(np.arange(r["length"]), np.arange(r["length"]))),
                                            len(prior) - 1)] + rng.uniform(0, 1e-6, (r["length"],) * 2)) for r in p_seq]
    t_eval = time.time() - t0
    s = {k: top_l_long(v) for k, v in (("sequence", p_seq), ("profile", p_prof), ("profile_onehot_input", p_fb),
                                        ("separation_prior", p_sep))}
    vec = {k: np.array([v[n] for n in held]) for k, v in s.items()}
    mean = {k: float(np.nanmean(v)) for k, v in vec.items()}
    res = dict(
        what="long-range (|i-j|>=24) top-L contact precision on held-out ProMod3 chains: cpu-preset encoder with "
             "sequence profiles (EncoderPreset.profile=True) vs the sequence-only encoder, same seed/data/budget",
        command=command, metrics_source="minifold.metrics.top_l_precision (via minifold.encoder.contact_map_scores)",
        params=dict(preset="cpu", epochs=a.epochs, max_len=a.max_len, eval_max_len=a.eval_max_len, seed=a.seed,
                    batch_size=cfg["sequence"]["params"]["batch_size"], lr=cfg["sequence"]["params"]["lr"],
                    threads_per_training=a.threads, jobs=a.jobs, homology_filter=not a.no_homology_filter,
                    min_seq_id=0.30, min_cov=0.50),
        data=dict(pack=rel(pack), profiles=rel(a.profiles), n_train=len(train), n_validation=len(val),
                  n_heldout=len(held), n_candidates_screened=len(cand), n_removed_homologous=len(removed),
                  train_names_sha256=hashlib.sha256("\n".join(train).encode()).hexdigest(),
                  heldout_names=held, profiles_in_training=cfg["profile"].get("profiles")),
        n_params={v: cfg[v]["n_params"] for v in cfg},
        training={v: dict(wall_s=runs[v]["wall_s"], best_epoch=runs[v]["best_epoch"], best_val_total=runs[v]["best_val"],
                          val_total_by_epoch=[r["val_total"] for r in runs[v]["rows"]],
                          contact_recall_val_by_epoch=[r["contact_recall_val"] for r in runs[v]["rows"]]) for v in runs},
        top_L_long_mean=mean,
        n_scored={k: int(np.isfinite(v).sum()) for k, v in vec.items()},
        gain_profile_vs_sequence=paired_bootstrap(vec["profile"], vec["sequence"], seed=a.seed),
        gain_profile_vs_own_onehot_input=paired_bootstrap(vec["profile"], vec["profile_onehot_input"], seed=a.seed),
        gain_sequence_vs_separation_prior=paired_bootstrap(vec["sequence"], vec["separation_prior"], seed=a.seed),
        bootstrap="paired over held-out chains, 10,000 resamples, percentile 95 % interval",
        per_chain_top_L={k: [None if not np.isfinite(x) else round(float(x), 5) for x in v] for k, v in vec.items()},
        seconds=dict(load_pack=round(t_load, 1), train_both=round(t_train, 1), evaluate=round(t_eval, 1),
                     total=round(time.time() - t_start, 1)),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), torch=torch.__version__,
                     note="shared 2-core machine, nice -n 19, 1 torch thread per training"),
    )
    g = res["gain_profile_vs_sequence"]
    print(f"held-out long-range top-L: sequence-only {mean['sequence']:.4f} | profile {mean['profile']:.4f} | "
          f"profile encoder with one-hot input {mean['profile_onehot_input']:.4f} | separation prior "
          f"{mean['separation_prior']:.4f}\n  gain profile − sequence {g['mean']:+.4f} (95 % paired bootstrap "
          f"{g['ci95'][0]:+.4f} … {g['ci95'][1]:+.4f}, {g['n_chains']} chains); train {t_train:.0f} s, total "
          f"{res['seconds']['total']:.0f} s")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
