"Sequence profiles: extraction from a ProMod3 StructureDB, the compact file, the one-hot fallback, the encoder flag."
import numpy as np
import pytest
import torch

from minifold.config import get_encoder_preset, ENCODER_PRESETS
from minifold.data import (PROFILE_ORDER, PROMOD3_DIR, Chain, ProteinDataset, collate, default_data_paths, detokenize,
                           extract_profiles, featurize, find_structure_db, load_chain_set, load_profiles, make_loader,
                           onehot_profile, read_splits, read_structure_db, save_profiles, tokenize, validate_profile,
                           write_structure_db)
from minifold.encoder import (ContactClassifier, build_encoder, encoder_losses, load_frozen_encoder, profile_onehot,
                              save_encoder)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sample():
    return load_chain_set(*default_data_paths("sample"))


@pytest.fixture(scope="module")
def full(sample):
    return [c for c in sample if np.isfinite(c.coords).all()]


def _profiles(chains, seed=0, alpha=0.3):
    g = np.random.default_rng(seed)
    return {c.name: g.dirichlet(np.full(20, alpha), len(c)).astype(np.float32) for c in chains}


# --- the math of a profile ---

def test_onehot_and_validate():
    p = onehot_profile("ACDEFGHIKLMNPQRSTVWYXbu")
    assert p.dtype == np.float32 and p.shape == (23, 20)
    assert np.array_equal(p[:20], np.eye(20, dtype=np.float32))                  # PROFILE_ORDER = the token order
    assert np.allclose(p[20:], 0.05) and np.allclose(p.sum(1), 1)               # X and non-standard letters: uniform
    assert onehot_profile("").shape == (0, 20)
    assert PROFILE_ORDER == "ACDEFGHIKLMNPQRSTVWY"
    ok = np.full((5, 20), 0.05, np.float32)
    assert validate_profile(ok, "AAAAA") is None
    assert validate_profile(ok, "AAAA") == "length_mismatch"
    assert validate_profile(ok[:, :19], "AAAAA") == "bad_shape"
    assert validate_profile(ok * 1.1, "AAAAA") == "bad_row_sum"
    bad = ok.copy(); bad[0, 0] = np.nan
    assert validate_profile(bad, "AAAAA") == "nonfinite"
    neg = ok.copy(); neg[0, :2] = [-0.05, 0.15]
    assert validate_profile(neg, "AAAAA") == "negative"


def test_encoder_onehot_matches_data(sample):
    "The encoder's token-side fallback equals data.onehot_profile, so a fallback row feeds exactly zero."
    for c in sample[:5]:
        tok = torch.from_numpy(tokenize(c.seq + "XZB")[0])
        assert torch.equal(profile_onehot(tok), torch.from_numpy(onehot_profile(c.seq + "XZB")))
        assert torch.equal(profile_onehot(tok), torch.from_numpy(onehot_profile(detokenize(tok))))


# --- extraction, the compact file ---

def test_extract_save_load(tmp_path, full):
    prof = _profiles(full)
    arrs = [prof[c.name] for c in full]
    arrs[1] = np.zeros_like(arrs[1])                                           # a chain stored without a profile
    db = write_structure_db(tmp_path / "s.dat", full, profiles=arrs)
    ps = extract_profiles(db, [c.name for c in full] + ["nope.A"])
    assert len(ps) == len(full) - 1 and dict(ps.report.skipped) == {"bad_row_sum": 1}
    assert ps.report.n_missing_from_file == 1 and full[1].name not in ps
    for c in full:
        if c.name in ps:
            assert ps[c.name].dtype == np.float32 and ps[c.name].shape == (len(c), 20)
            assert np.abs(ps[c.name] - prof[c.name]).max() <= 0.51e-4
    assert len(extract_profiles(db)) == len(full) - 1                        # all chains of the file
    info = save_profiles(ps, tmp_path / "p.npz")
    back = load_profiles(tmp_path / "p.npz")
    assert info["n_chains"] == len(ps) and info["dtype"] == "uint8" and set(back) == set(ps)
    assert back.report.n_skipped == 0 and back.report.n_loaded == len(ps)
    for k in ps:
        assert np.allclose(back[k].sum(1), 1, atol=1e-5) and np.abs(back[k] - ps[k]).max() < 0.02
    i16 = save_profiles(ps, tmp_path / "p16.npz", dtype="float16")
    b16 = load_profiles(tmp_path / "p16.npz")
    assert max(np.abs(b16[k] - ps[k]).max() for k in ps) < 1e-3
    assert info["bytes"] < i16["bytes"]                                       # uint8 is the compact one
    sub = load_profiles(tmp_path / "p.npz", names=[full[0].name, "zz.Z"])
    assert set(sub) == {full[0].name} and sub.report.n_missing_from_file == 1
    with pytest.raises(ValueError, match="dtype"): save_profiles(ps, tmp_path / "x.npz", dtype="int8")
    with pytest.raises(ValueError, match="not a finite"): save_profiles({"a": np.zeros((3, 7))}, tmp_path / "x.npz")


def test_bad_files(tmp_path):
    np.savez(tmp_path / "old.npz", **{"a.A": np.full((4, 20), 0.05, np.float16), "b.B": np.full((4, 20), 0.5, np.float16),
                                      "c.C": np.zeros((4, 20), np.float16)})
    old = load_profiles(tmp_path / "old.npz")                                 # the older {name: float16} layout
    assert list(old) == ["a.A"] and dict(old.report.skipped) == {"bad_row_sum": 2}
    assert any("b.B" in d for d in old.report.details)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable profiles file"): load_profiles(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError): load_profiles(tmp_path / "missing.npz")
    save_profiles({"a.A": np.full((2, 20), 0.05)}, tmp_path / "ok.npz")
    z = dict(np.load(tmp_path / "ok.npz")); z["order"] = np.array(PROFILE_ORDER[::-1])
    np.savez(tmp_path / "reordered.npz", **z)
    with pytest.raises(ValueError, match="profile columns"): load_profiles(tmp_path / "reordered.npz")


# --- batches: real profile, or the flagged, counted one-hot fallback ---

def test_dataset_and_collate(sample, full):
    prof = _profiles(full[:3])
    chains = full[:3] + [c for c in sample if c.name not in prof][:2]
    ds = ProteinDataset(chains, max_len=40, train=True, seed=3, profiles=prof)
    assert ds.n_profile_fallback == 2 and ds.profile_fallback == {"no_profile": 2}
    for i, c in enumerate(chains):
        it, (a, b) = ds[i], ds.crop_for(i)
        want = prof[c.name][a:b] if c.name in prof else onehot_profile(c.seq[a:b])
        assert torch.equal(it["profile"], torch.from_numpy(np.ascontiguousarray(want)))
        assert bool(it["profile_real"]) == (c.name in prof)
    b = collate([ds[i] for i in range(len(chains))])
    assert b["profile"].shape == (5, b["tokens"].shape[1], 20) and b["profile_real"].tolist() == [True] * 3 + [False] * 2
    assert (b["profile"][~b["mask"]] == 0).all()
    assert torch.equal(b["tokens"], collate([featurize(c, ds.crop_for(i)) for i, c in enumerate(chains)])["tokens"])
    short = {full[0].name: prof[full[0].name][:-1]}                           # a profile of another length
    assert ProteinDataset(full[:1], profiles=short).profile_fallback == {"length_mismatch": 1}
    assert ProteinDataset(full[:2], profiles={}).n_profile_fallback == 2     # none at all: every chain flagged
    n_real = sum(int(x["profile_real"].sum()) for x in make_loader(chains, 40, batch_size=2, profiles=prof))
    assert n_real == 3
    assert all("profile" not in x for x in make_loader(chains, 40, batch_size=2))   # off: batches unchanged


# --- the encoder flag ---

def _batch(chains, prof):
    return collate([featurize(c, (0, min(len(c), 24)), profile=prof.get(c.name, onehot_profile(c.seq)),
                              profile_real=c.name in prof) for c in chains])


def test_encoder_flag(full):
    assert all(not p.profile for p in ENCODER_PRESETS.values())
    torch.manual_seed(1); m0 = ContactClassifier("tiny")
    torch.manual_seed(1); m1 = ContactClassifier(get_encoder_preset("tiny", profile=True))
    assert m1.n_params() - m0.n_params() == 20 * 32 and (m1.profile_proj.weight == 0).all()
    prof = _profiles(full[:2], seed=2)
    b = _batch(full[:4], prof)
    m0.eval(); m1.eval()
    o0, o1 = m0(b["tokens"], b["mask"]), m1(b["tokens"], b["mask"], profile=b["profile"])
    for k in ("single", "pair", "pooled", "contact_logits"): assert torch.equal(o0[k], o1[k]), k   # zero-init
    # the projection learns from real profiles only; a fallback chain gives it no gradient
    m1.train()
    for blk in m1.modules():
        if isinstance(blk, torch.nn.Dropout): blk.p = 0.0
    tot, _ = encoder_losses(m1(b["tokens"], b["mask"], profile=b["profile"]), b, m1.preset)
    tot.backward()
    assert m1.profile_proj.weight.grad.abs().sum() > 0
    m1.zero_grad()
    bf = _batch(full[2:4], {})
    tot, _ = encoder_losses(m1(bf["tokens"], bf["mask"], profile=bf["profile"]), bf, m1.preset)
    tot.backward()
    assert m1.profile_proj.weight.grad is None or m1.profile_proj.weight.grad.abs().sum() == 0
    # after training the weights are non-zero: real profiles matter, fallback rows and absent profiles still add 0
    with torch.no_grad(): m1.profile_proj.weight.normal_(std=0.5)
    m1.eval()
    o1 = m1(b["tokens"], b["mask"], profile=b["profile"])
    assert not torch.allclose(o1["single"][:2], o0["single"][:2], atol=1e-4)
    assert torch.equal(o1["single"][2:], o0["single"][2:])                    # the fallback chains: sequence-only path
    n = m1.n_profile_fallback
    assert torch.equal(m1(bf["tokens"], bf["mask"])["single"], m1(bf["tokens"], bf["mask"], profile=bf["profile"])["single"])
    assert m1.n_profile_fallback == n + 1
    with pytest.raises(ValueError, match="profile"): m1(b["tokens"], b["mask"], profile=b["profile"][:, :3])


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = ContactClassifier(get_encoder_preset("tiny", profile=True), n_arch=7)
    with torch.no_grad(): m.profile_proj.weight.normal_()
    path = save_encoder(m, tmp_path / "e.pt", arch_vocab=[str(i) for i in range(7)])
    back = load_frozen_encoder(path)
    assert back.preset.profile and torch.equal(back.profile_proj.weight, m.profile_proj.weight)
    assert build_encoder(get_encoder_preset("tiny", profile=True), weights=path).profile_proj is not None
    with pytest.raises(ValueError, match="differs"): build_encoder("tiny", weights=path)   # flag is part of the architecture


# --- the real ProMod3 file (skipped where it is absent: CI has no data/promod3) ---

_REAL = find_structure_db()
_NO_DB = "ProMod3 structure_db.dat not present (apt-get download promod3-data; minifold-build-promod3; CI has none)"


@pytest.mark.skipif(_REAL is None, reason=_NO_DB)
def test_real_profiles():
    recs = read_structure_db(_REAL, profiles=True, limit=100)
    ps = extract_profiles(recs)
    assert len(ps) == 100 and ps.report.n_skipped == 0
    rows = np.concatenate(list(ps.values()))
    assert np.abs(rows.sum(1) - 1).max() < 0.002 and rows.min() >= 0
    own = np.concatenate([onehot_profile(r["seq"]) for r in recs])
    assert 0.3 < (rows.argmax(1) == own.argmax(1)).mean() < 0.7               # an alignment profile, not the sequence


@pytest.mark.skipif(not (PROMOD3_DIR / "profiles.npz").is_file() or _REAL is None,
                    reason="data/promod3/profiles.npz not written (minifold.data.write_promod3_profiles(); CI has none)")
def test_real_profiles_file():
    train = read_splits(PROMOD3_DIR / "chain_set_splits.json")["train"]
    recs = {r["name"]: r for r in read_structure_db(_REAL, profiles=True, limit=400)}
    names = [n for n in train if n in recs][:50]
    ps = load_profiles(PROMOD3_DIR / "profiles.npz", names=names)
    assert len(ps) == len(names) == 50 and ps.report.n_skipped == 0
    for n in names:
        assert ps[n].shape == (len(recs[n]["seq"]), 20) and np.abs(ps[n] - recs[n]["profile"]).max() < 0.02
