"nbs/evaluate.ipynb end to end with papermill at its CI-sized defaults (trains a throw-away tiny model first)."
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("minifold.model")
pytest.importorskip("minifold.trainer")
pm = pytest.importorskip("papermill")
pd = pytest.importorskip("pandas")


def test_evaluate_notebook_defaults(tmp_path):
    run_dir = tmp_path / "tiny_eval"
    t0 = time.time()
    pm.execute_notebook(str(ROOT / "nbs" / "evaluate.ipynb"), str(tmp_path / "evaluate_out.ipynb"),
                        parameters={"run_dir": str(run_dir)}, cwd=str(ROOT / "nbs"), progress_bar=False,
                        kernel_name="python3")
    wall = time.time() - t0
    ev = pd.read_csv(run_dir / "eval.csv")
    need = {"name", "length", "cath_class", "method", "tm", "rmsd", "gdt_ts", "gdt_ha", "steps", "eta", "guidance",
            "n_samples", "checkpoint", "split"}
    assert need <= set(ev.columns), need - set(ev.columns)
    assert {"ddim", "ddim_best_of_k", "x0_pred_t100", "noised_truth_t100", "ideal_helix", "random_walk_rg", "contact_mds"} <= set(ev.method)
    assert ev.tm.between(0, 1).all() and (ev.rmsd >= 0).all() and ev.gdt_ts.between(0, 1).all()
    per = ev.pivot_table(index="name", columns="method", values="tm")
    assert (per["ddim_best_of_k"] >= per["ddim"] - 1e-6).all()     # best-of-k can only improve on sample 0
    for png in ("ramachandran.png", "sse_composition.png", "diversity.png", "eval_tm.png"):
        assert (run_dir / png).stat().st_size > 1000
    assert (run_dir / "eval_diversity.csv").exists() and list((run_dir / "samples").glob("*.pdb"))
    assert (run_dir / "ckpt" / "last.pt").exists()                   # the CI stand-in model was trained
    print(f"evaluate.ipynb defaults: {wall:.1f} s")
