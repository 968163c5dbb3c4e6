"nbs/evaluate.ipynb end to end with papermill at its CI-sized defaults (trains a throw-away tiny model first)."
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("minifold.model")
pytest.importorskip("minifold.trainer")
pm = pytest.importorskip("papermill")
pd = pytest.importorskip("pandas")


def run_nb(tmp_path, **parameters):
    return pm.execute_notebook(str(ROOT / "nbs" / "evaluate.ipynb"), str(tmp_path / "evaluate_out.ipynb"),
                               parameters={k: str(v) if isinstance(v, Path) else v for k, v in parameters.items()},
                               cwd=str(ROOT / "nbs"), progress_bar=False, kernel_name="python3")


def test_evaluate_notebook_defaults(tmp_path):
    run_dir, train_dir = tmp_path / "tiny_eval", tmp_path / "stand_in"
    t0 = time.time()
    nb = run_nb(tmp_path, run_dir=run_dir, train_dir=train_dir)
    wall = time.time() - t0
    ev = pd.read_csv(run_dir / "eval.csv")
    need = {"name", "length", "cath_class", "method", "tm", "rmsd", "gdt_ts", "gdt_ha", "steps", "eta", "guidance",
            "n_samples", "checkpoint", "split", "sse_class", "template", "template_identity", "template_coverage",
            "template_evalue"}
    assert need <= set(ev.columns), need - set(ev.columns)
    methods = {"ddim", "ddim_consensus_of_k", "ddim_best_of_k", "x0_pred_t100", "noised_truth_t100", "ideal_helix", "random_walk_rg", "contact_mds",
               "template"}
    assert methods <= set(ev.method)
    assert ev.tm.between(0, 1).all() and (ev.rmsd.dropna() >= 0).all() and ev.gdt_ts.between(0, 1).all()
    # every row has the SSE class of its chain's true structure (one class per chain)
    assert set(ev.sse_class) <= {"alpha", "beta-containing", "other"} and ev.groupby("name").sse_class.nunique().eq(1).all()
    # the template baseline: one row per chain, a baseline; RMSD is NaN only for template rows without a hit (TM, GDT 0)
    tpl = ev[ev.method == "template"]
    assert len(tpl) == ev.name.nunique() and set(tpl.kind) == {"baseline"}
    assert set(ev[ev.rmsd.isna()].index) == set(tpl[tpl.template.isna()].index)
    assert (tpl[tpl.template.isna()].tm == 0).all() and (tpl[tpl.template.isna()].gdt_ts == 0).all()
    assert tpl.template.isna().all()   # the sample's 32 training chains hold no homologue of its test chains
    per = ev.pivot_table(index="name", columns="method", values="tm")
    assert (per["ddim_best_of_k"] >= per["ddim"] - 1e-6).all()     # best-of-k can only improve on sample 0
    assert (per["ddim_best_of_k"] >= per["ddim_consensus_of_k"] - 1e-6).all()   # the consensus pick is one of the k
    assert len(ev[ev.method == "ddim_consensus_of_k"]) == ev.name.nunique() and set(ev[ev.method == "ddim_consensus_of_k"].kind) == {"model"}
    for png in ("ramachandran.png", "sse_composition.png", "diversity.png", "eval_tm.png"):
        assert (run_dir / png).stat().st_size > 1000
    assert (run_dir / "eval_diversity.csv").exists() and list((run_dir / "samples").glob("*.pdb"))
    # the by-length table is persisted next to eval.csv: method × bin with n, TM mean/median, RMSD mean, GDT-TS mean
    bl = pd.read_csv(run_dir / "eval_by_length.csv")
    assert {"method", "length_bin", "n", "tm_mean", "tm_median", "rmsd_mean", "gdt_ts_mean"} <= set(bl.columns)
    assert methods <= set(bl.method) and set(bl.length_bin) == {"<50", "50–74", "75–99", "≥100"}
    assert bl.groupby("method").n.sum().to_dict() == ev.groupby("method").size().to_dict()
    d = bl[(bl.method == "ddim") & (bl.n > 0)].iloc[0]
    rows = ev[(ev.method == "ddim") & ev.length.between(*{"<50": (0, 49), "50–74": (50, 74), "75–99": (75, 99),
                                                            "≥100": (100, 10 ** 6)}[d.length_bin])]
    assert len(rows) == d.n and abs(rows.tm.mean() - d.tm_mean) < 1e-9
    # the by-class table: method × SSE class (all three kept), every row of eval.csv in one class
    bc = pd.read_csv(run_dir / "eval_by_class.csv")
    assert {"method", "sse_class", "n", "tm_mean", "tm_median", "rmsd_mean", "gdt_ts_mean"} <= set(bc.columns)
    assert methods <= set(bc.method) and set(bc.sse_class) == {"alpha", "beta-containing", "other"}
    assert bc.groupby("method").n.sum().to_dict() == ev.groupby("method").size().to_dict()
    c = bc[(bc.method == "ddim") & (bc.n > 0)].iloc[0]
    rows = ev[(ev.method == "ddim") & (ev.sse_class == c.sse_class)]
    assert len(rows) == c.n and abs(rows.tm.mean() - c.tm_mean) < 1e-9
    # the CI stand-in model was trained in its own folder, not in run_dir
    assert (train_dir / "ckpt" / "last.pt").exists() and not (run_dir / "ckpt").exists()
    assert not (run_dir / "epochs.csv").exists() and not (run_dir / "config.json").exists()
    assert len(set(ev.checkpoint)) == 1 and Path(ev.checkpoint[0]).parent == train_dir / "ckpt"
    # the 3-D view cell ran and returned a py3Dmol view (no browser needed)
    view_cells = [c for c in nb.cells if c.cell_type == "code" and "show_structure(view_pred" in c.source]
    assert len(view_cells) == 1 and "3dmol" in str(view_cells[0].outputs).lower()
    print(f"evaluate.ipynb defaults: {wall:.1f} s")
    # an evaluation is not replaced by one with other settings (same settings: rewritten, overwrite=True: replaced)
    before = (run_dir / "eval.csv").read_bytes()
    ck = ev.checkpoint[0]
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_nb(tmp_path, run_dir=run_dir, checkpoint=ck, steps=4, max_chains=2, diversity_k=2)
    assert "holds an evaluation made with other settings" in str(e.value) and "steps: 10 there, 4 here" in str(e.value)
    assert (run_dir / "eval.csv").read_bytes() == before
    run_nb(tmp_path, run_dir=run_dir, checkpoint=ck, steps=4, max_chains=2, diversity_k=2, overwrite=True,
           template_baseline=False)
    ev2 = pd.read_csv(run_dir / "eval.csv")
    assert set(ev2.steps) == {4} and "template" not in set(ev2.method)      # template_baseline=False: no template rows
    assert "template" not in set(pd.read_csv(run_dir / "eval_by_class.csv").method)


def test_evaluate_refuses_to_overwrite_a_run(tmp_path):
    "A run folder with training results but no checkpoint (a committed run in a clean clone) + train_if_missing → error."
    run_dir = tmp_path / "committed_run"
    run_dir.mkdir()
    (run_dir / "epochs.csv").write_text("epoch,train_total\n1,3.0\n")
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_nb(tmp_path, run_dir=run_dir, train_dir=tmp_path / "stand_in", train_if_missing=True)
    assert "holds a training run (epochs.csv) but no checkpoint" in str(e.value)
    assert sorted(p.name for p in run_dir.iterdir()) == ["epochs.csv"]          # nothing written or overwritten
    assert not (tmp_path / "stand_in").exists()                                   # and nothing trained
