"Homology-template baseline (minifold.templates): copies hit and thread to TM ≈ 1, random sequences miss, bad input fails."
import numpy as np
import pytest
import torch

pytest.importorskip("biotite")
from minifold.data import Chain, crop_window, default_data_paths, load_chain_set
from minifold.metrics import tm_score
from minifold.templates import (ALIGNED, MISSING, TemplateDB, crop_chain, score_threaded, sse_class, template_predictions,
                                thread_template)


@pytest.fixture(scope="module")
def sample():
    data, splits = default_data_paths("sample")
    return list(load_chain_set(data, splits, split="train")), list(load_chain_set(data, splits, split="test"))


def _truth(c):
    ca = torch.tensor(c.coords[:, 1], dtype=torch.float32)
    return torch.nan_to_num(ca), torch.isfinite(ca).all(-1)


def _mutate(seq, frac, seed):
    s, rng = list(seq), np.random.default_rng(seed)
    for i in rng.choice(len(s), int(len(s) * frac), replace=False):
        s[i] = "W" if s[i] != "W" else "A"
    return "".join(s)


def test_near_copy_hits_and_threads_to_tm_one(sample):
    train, test = sample
    q = test[3]
    copy = Chain("copy_of_query", _mutate(q.seq, 0.05, 0), q.coords.copy(), q.cath)   # 5 % point mutations
    db = TemplateDB(train + [copy])
    h = db.search(q.seq, exclude=q.name)
    assert h is not None and h.template == "copy_of_query"
    assert h.identity >= 0.94 and h.coverage == 1.0 and h.evalue < 1e-20 and h.passes()
    ca, src = thread_template(len(q.seq), h, copy)
    assert (src == ALIGNED).sum() == np.isfinite(q.coords[:, 1]).all(-1).sum()
    t, m = _truth(q)
    s = score_threaded([ca], [src], [t], [m])
    assert s["tm"][0] > 0.99 and s["rmsd"][0] < 1e-3 and s["gdt_ts"][0] > 0.99 and s["placed"][0] == 1.0
    # through template_predictions, on the evaluated crop (as nbs/evaluate.ipynb does)
    crop = crop_chain(q, crop_window(len(q.seq), 48))
    p = template_predictions([crop], db)[0]
    assert p["template"] == "copy_of_query" and p["identity"] >= 0.9 and p["coverage"] == 1.0
    t, m = _truth(crop)
    assert score_threaded([p["ca"]], [p["source"]], [t], [m])["tm"][0] > 0.99


def test_own_name_is_never_a_hit(sample):
    train, _ = sample
    db = TemplateDB(train)
    c = train[0]
    assert db.search(c.seq, exclude="another_name").template == c.name        # the chain itself is in the DB
    h = db.search(c.seq, exclude=c.name)
    assert h is None or h.template != c.name
    assert all(p["template"] != c.name for p in template_predictions([c], db))


def test_random_sequence_has_no_hit(sample):
    train, test = sample
    db = TemplateDB(train + test)
    rng = np.random.default_rng(1234)
    for L in (40, 80, 150):
        seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), L))
        assert db.search(seq) is None
        q = Chain("random", seq, np.full((L, 4, 3), np.nan, np.float32))
        p = template_predictions([q], db)[0]
        assert p["hit"] is None and p["template"] is None and torch.isnan(p["ca"]).all() and (p["source"] == MISSING).all()


def test_no_hit_scores_zero_and_missing_residues_count(sample):
    _, test = sample
    t, m = _truth(test[0])
    L = len(t)
    third = torch.full((L,), MISSING, dtype=torch.int8)
    third[: L // 3] = ALIGNED
    s = score_threaded([None, t], [None, third], [t, t], [m, m])
    assert s["tm"][0] == 0 and s["gdt_ts"][0] == 0 and np.isnan(s["rmsd"][0])
    frac = int(m[: L // 3].sum()) / int(m.sum())
    assert abs(s["tm"][1] - frac) < 1e-4 and abs(s["gdt_ts"][1] - frac) < 1e-4      # normalised by the whole chain
    assert tm_score(t, t, m & (third > 0)).item() > 0.999                          # tm_score's own normaliser would say 1


def test_bad_input_raises(sample):
    train, _ = sample
    db = TemplateDB(train)
    with pytest.raises(ValueError, match="empty sequence"):
        db.search("")
    with pytest.raises(ValueError, match="empty sequence"):
        template_predictions([Chain("empty", "", np.zeros((0, 4, 3), np.float32))], db)
    with pytest.raises(TypeError, match="one-letter"):
        db.search(None)
    with pytest.raises(ValueError, match="no chain"):
        TemplateDB([])
    with pytest.raises(ValueError, match="crop"):
        crop_chain(train[0], (5, 2))


def test_sse_class_of_a_helix():
    from minifold.geometry import ideal_helix
    assert sse_class(ideal_helix(50)) == "alpha"
    assert sse_class(ideal_helix(4)) == "other"
