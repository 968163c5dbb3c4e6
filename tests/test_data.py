"Tests of minifold.data: readers (CATH 4.2 jsonl, structure folders), bad inputs, tokens, features, batching, download."
import gzip
import http.server
import json
import socket
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from minifold import data as D
from minifold.config import CONTACT_CUTOFF, get_preset, to_model_units

BATCH_KEYS = {"names", "tokens", "mask", "residue_index", "ca", "ca_mask", "x0", "bb", "bb_mask", "bb0",
              "contacts", "contact_mask", "cath_class", "cath_arch", "length"}


@pytest.fixture(scope="module")
def sample(sample_dir):
    return D.load_chain_set(sample_dir / "chain_set.jsonl")


def _coords(L, ca_nan=False):
    ca = [[float("nan")] * 3 if ca_nan else [3.8 * i, 0.0, 0.0] for i in range(L)]
    return {"N": ca, "CA": ca, "C": ca, "O": ca}


def _line(name, seq, L=None, **kw):
    return json.dumps({"name": name, "seq": seq, "CATH": [], "num_chains": None,
                       "coords": _coords(len(seq) if L is None else L, **kw)})


def _write(path, lines):
    "Write lines (str, or bytes for deliberately broken encodings) as a JSON Lines file."
    path.write_bytes(b"\n".join(ln if isinstance(ln, bytes) else ln.encode() for ln in lines) + b"\n")
    return path


def _rec(name="x.A", seq="ACDEF", **fields):
    "A JSON record (dict) with plain coordinates, updated with `fields`."
    return {"name": name, "seq": seq, "CATH": [], "num_chains": None, "coords": _coords(len(seq)), **fields}


# ----------------------------------------------------------------------------- tokens and labels
def test_tokenizer():
    tok, n = D.tokenize("ACDEFGHIKLMNPQRSTVWY")
    assert tok.tolist() == list(range(4, 24)) and n == 0
    tok, n = D.tokenize("acdXBzu-")
    assert tok[:3].tolist() == [4, 5, 6] and (tok[3:] == D.X).all() and n == 5
    assert (D.PAD, D.MASK, D.CLS, D.EOS, D.X, D.VOCAB_SIZE) == (0, 1, 2, 3, 24, 25)
    with pytest.raises(TypeError):
        D.tokenize(None)


def test_arch_vocab_file_and_labels():
    meta = json.loads(D.ARCH_VOCAB_FILE.read_text())
    assert meta["architectures"] == D.ARCH_VOCAB and meta["n"] == len(D.ARCH_VOCAB) == 38
    assert D.cath_labels(["3.40.50"]) == (2, D.ARCH_VOCAB.index("3.40"))
    assert D.cath_labels([]) == (-1, -1) and D.cath_labels(["junk"]) == (-1, -1)


def test_arch_vocab_matches_genuine_cath42():
    p = D.CATH42_DIR / "chain_set_splits.json"
    if not p.exists():
        pytest.skip("genuine CATH 4.2 splits file not present")
    splits = json.loads(p.read_text())
    assert {k: len(v) for k, v in splits.items() if k != "cath_nodes"} == {"train": 18024, "validation": 608, "test": 1120}
    assert D.build_arch_vocab(splits["cath_nodes"]) == D.ARCH_VOCAB


# ----------------------------------------------------------------------------- CATH 4.2 reader
def test_sample_and_splits(sample, sample_dir):
    assert len(sample) == 51 and sample.report.n_skipped == 0
    sizes = {s: len(D.load_chain_set(sample_dir / "chain_set.jsonl", split=s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 32, "validation": 10, "test": 9}
    with pytest.raises(KeyError, match="available splits"):
        D.load_chain_set(sample_dir / "chain_set.jsonl", split="val")
    for c in sample:
        assert c.coords.shape == (len(c.seq), 4, 3) and c.coords.dtype == np.float32
        assert not np.isnan(c.coords[:, 1]).all()
    # cgdms chains have no O atoms; docking-benchmark chains do
    assert all(np.isnan(c.coords[:, 3]).all() for c in sample if c.source == "cgdms")
    assert any(not np.isnan(c.coords[:, 3]).all() for c in sample if c.source.startswith("db55"))


def test_split_names_missing_from_file(tmp_path, caplog):
    jl = _write(tmp_path / "chain_set.jsonl", [_line("a.A", "ACDE"), _line("b.A", "ACDE")])
    (tmp_path / "chain_set_splits.json").write_text(json.dumps({"train": ["a.A", "zz.A", "yy.B"], "test": ["b.A"]}))
    with caplog.at_level("WARNING", logger="minifold.data"):
        cs = D.load_chain_set(jl, split="train")
    assert [c.name for c in cs] == ["a.A"] and cs.report.n_missing_from_file == 2 and cs.report.n_outside_split == 1
    assert "2 split names missing" in caplog.text


def test_nan_literals_null_atoms_and_gzip(tmp_path):
    rec = {"name": "n.A", "seq": "ACDEF", "CATH": ["1.10.10"], "num_chains": 1,
           "coords": {"N": [[0.0, 0, 0]] * 5, "CA": [[float(i), 0, 0] for i in range(5)],
                      "C": [[float("nan")] * 3] + [[1.0, 1, 1]] * 4, "O": [None, [1.0, 2, 3], None, None, None]}}
    text = json.dumps(rec)
    assert "NaN" in text                                  # the published file uses NaN literals
    p = tmp_path / "c.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(text + "\n")
    (c,) = D.load_chain_set(p)
    miss = np.isnan(c.coords).any(-1)
    assert miss[:, 2].tolist() == [True, False, False, False, False]
    assert miss[:, 3].tolist() == [True, False, True, True, True]
    # a missing atom key (no "O" at all) is all-NaN, not an error
    rec["coords"].pop("O")
    _write(tmp_path / "noO.jsonl", [json.dumps(rec)])
    (c2,) = D.load_chain_set(tmp_path / "noO.jsonl")
    assert np.isnan(c2.coords[:, 3]).all()


@pytest.mark.parametrize("line,reason", [
    ("{broken", "malformed_json"),
    ("[1, 2, 3]", "malformed_json"),
    (_line("noca.A", "ACDEF", ca_nan=True), "no_ca"),
    (_line("short.A", "AC"), "too_short"),
    (_line("mism.A", "ACDEF", L=4), "length_mismatch"),
    (json.dumps({"name": "nocoords.A", "seq": "ACDE"}), "bad_record"),
    (json.dumps({"name": "badshape.A", "seq": "ACD", "coords": {"N": [[1, 2]] * 3}}), "bad_record"),
    # a byte that is not UTF-8 (Latin-1 é): that line is malformed, the rest of the file loads
    (_line("latin1.A", "ACDEF").replace("latin1", "caf\u00e9").encode("latin-1"), "malformed_json"),
    (b"\xff\xfe{}", "malformed_json"),
    # CATH must be a list of strings (or one string)
    (json.dumps(_rec("cathnum.A", CATH=3.4)), "bad_record"),
    (json.dumps(_rec("cathints.A", CATH=[3, 40, 50])), "bad_record"),
    (json.dumps(_rec("cathdict.A", CATH={"code": "3.40.50"})), "bad_record"),
    # every Cα non-finite: made missing (counted), so the chain has no Cα at all
    (json.dumps(_rec("infca.A", coords=dict(_coords(5), CA=[[float("inf"), 0, 0]] * 5))), "no_ca"),
])
def test_bad_records_are_counted_or_raise(tmp_path, line, reason):
    p = _write(tmp_path / "x.jsonl", [_line("ok.A", "ACDEF"), line, _line("ok2.A", "ACDEF")])
    cs = D.load_chain_set(p)
    assert [c.name for c in cs] == ["ok.A", "ok2.A"]
    assert cs.report.skipped == Counter({reason: 1}) and cs.report.n_records == 3
    assert "line 2" in cs.report.details[0] and reason in cs.report.summary()
    with pytest.raises(ValueError, match=":2:"):
        D.load_chain_set(p, strict=True)


def test_nonfinite_coordinates_are_missing_and_counted(tmp_path, caplog):
    co = _coords(6)
    co["CA"] = [list(r) for r in co["CA"]]
    co["CA"][1] = [float("inf"), 0.0, 0.0]                 # JSON Infinity
    co["N"] = [list(r) for r in co["N"]]; co["N"][2] = [0.0, float("-inf"), 0.0]   # -Infinity
    text = json.dumps(_rec("inf.A", "ACDEFG", coords=co))
    assert "Infinity" in text and "-Infinity" in text
    big = json.dumps(_rec("big.A", "ACDEFG")).replace("[7.6, 0.0, 0.0]", "[7.6, 1e39, 0.0]", 1)   # beyond float32
    assert "1e39" in big
    p = _write(tmp_path / "x.jsonl", [text, big, _line("ok.A", "ACDEF")])
    with caplog.at_level("WARNING", logger="minifold.data"):
        cs = D.load_chain_set(p)
    assert [c.name for c in cs] == ["inf.A", "big.A", "ok.A"] and cs.report.n_skipped == 0
    rep = cs.report
    # big.A: the 1e39 sits in the first atom written with [7.6, 0, 0] (N of residue index 2)
    assert rep.n_nonfinite_coords == 3 and rep.n_records_with_nonfinite == 2
    assert "3 atoms with non-finite coordinates" in rep.summary() and "non-finite" in caplog.text
    assert any("line 1 (inf.A)" in d for d in rep.details) and any("line 2 (big.A)" in d for d in rep.details)
    inf = cs[0]
    assert np.isnan(inf.coords[1, 1]).all() and np.isnan(inf.coords[2, 0]).all() and np.isfinite(inf.coords[0]).all()
    assert np.isnan(cs[1].coords[2, 0]).all() and not np.isinf(cs[1].coords).any()
    for ch in cs:                                        # features: missing, never NaN / Inf with a True mask
        f = D.featurize(ch)
        assert torch.isfinite(f["ca"]).all() and torch.isfinite(f["bb"]).all() and torch.isfinite(f["contacts"]).all()
    f = D.featurize(inf)
    assert not f["ca_mask"][1] and not f["bb_mask"][2, 0] and f["bb_mask"][0].all()
    with pytest.raises(ValueError, match=":1:.*non-finite"):
        D.load_chain_set(p, strict=True)
    # a Chain built by hand with an Inf is rejected by validation (and hence by ProteinDataset)
    xyz = np.zeros((4, 4, 3), np.float32); xyz[2, 1, 0] = np.inf
    assert D.validate_chain(D.Chain("h", "ACDE", xyz)) == "nonfinite_coords"
    with pytest.raises(ValueError, match="nonfinite_coords"):
        D.ProteinDataset([D.Chain("h", "ACDE", xyz)])


def test_cath_field_string_or_list(tmp_path):
    p = _write(tmp_path / "x.jsonl", [json.dumps(_rec("s.A", CATH="3.40.50")),
                                      json.dumps(_rec("l.A", CATH=["1.10.10", "2.30.30"])),
                                      json.dumps(_rec("n.A", CATH=None)), json.dumps(_rec("e.A", CATH=""))])
    cs = D.load_chain_set(p)
    assert [c.cath for c in cs] == [["3.40.50"], ["1.10.10", "2.30.30"], [], []] and cs.report.n_skipped == 0
    assert D.cath_labels(cs[0].cath) == (2, D.ARCH_VOCAB.index("3.40"))     # not split into characters
    with pytest.raises(ValueError, match="CATH"):
        D.chain_from_record(_rec("b.A", CATH=[None]))


def test_non_utf8_line_and_truncated_gzip(tmp_path):
    lines = [_line(f"c{i}.A", "ACDEF" * 10) for i in range(40)]
    lines[5] = lines[5].encode().replace(b"c5.A", b"c5\xe9.A")            # Latin-1 é in line 6
    p = _write(tmp_path / "x.jsonl", lines)
    cs = D.load_chain_set(p)
    assert len(cs) == 39 and cs.report.skipped == Counter(malformed_json=1)
    assert "line 6: not UTF-8" in cs.report.details[0]
    with pytest.raises(ValueError, match=":6: not UTF-8"):
        D.load_chain_set(p, strict=True)
    # the same file gzipped, then cut short: a ValueError that names the file and the lines read
    gz = tmp_path / "chain_set.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write(p.read_bytes())
    assert len(D.load_chain_set(gz)) == 39
    full = gz.read_bytes()
    for cut in (8, len(full) // 2):
        (tmp_path / "cut.jsonl.gz").write_bytes(full[:-cut])
        with pytest.raises(ValueError, match=r"cut\.jsonl\.gz: truncated or corrupt gzip .* \d+ complete lines were read"):
            D.load_chain_set(tmp_path / "cut.jsonl.gz")
    (tmp_path / "plain.jsonl.gz").write_bytes(p.read_bytes())          # not gzip at all
    with pytest.raises(ValueError, match="plain.jsonl.gz: truncated or corrupt gzip"):
        D.load_chain_set(tmp_path / "plain.jsonl.gz")
    (tmp_path / "chain_set_splits.json").write_bytes(b'{"train": ["c\xe9"]}')
    with pytest.raises(ValueError, match="not a readable splits JSON"):
        D.load_chain_set(gz, split="train")


def test_duplicates_unknowns_empty_and_missing(tmp_path):
    p = _write(tmp_path / "x.jsonl", [_line("a.A", "ACDBZ"), _line("a.A", "ACDEF"), "", _line("b.A", "acdef")])
    cs = D.load_chain_set(p)
    assert [c.name for c in cs] == ["a.A", "b.A"] and cs.report.skipped == Counter(duplicate_name=1)
    assert cs.report.n_unknown_residues == 2 and cs.report.n_chains_with_unknown == 1
    with pytest.raises(ValueError, match="empty"):
        D.load_chain_set(_write(tmp_path / "e.jsonl", ["", "  "]))
    with pytest.raises(FileNotFoundError, match="minifold-fetch-cath"):
        D.load_chain_set(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError):
        D.load_chain_set(p, split="train")      # no splits file next to it


# ----------------------------------------------------------------------------- structure folders
def test_structure_folder_roundtrip(tmp_path, sample):
    import biotite.structure.io.pdb as pdb
    import biotite.structure.io.pdbx as pdbx
    ref = next(c for c in sample if c.source.startswith("db55"))   # has O atoms
    cg = sample[0]                                                  # cgdms: no O atoms
    arr = D.chain_to_atoms(ref, "A")
    arr.res_name[arr.res_id == 3] = "SEP"                            # non-standard → X, counted
    f = pdb.PDBFile(); f.set_structure(arr); f.write(tmp_path / "p1.pdb")
    with open(tmp_path / "p1.pdb", "rb") as src, gzip.open(tmp_path / "p2.pdb.gz", "wb") as dst:
        dst.write(src.read())
    c = pdbx.CIFFile(); pdbx.set_structure(c, D.chain_to_atoms(cg, "C")); c.write(tmp_path / "m1.cif")
    b = pdbx.BinaryCIFFile(); pdbx.set_structure(b, D.chain_to_atoms(cg, "D")); b.write(tmp_path / "m2.bcif")
    # a chain with a missing CA in one residue (atom deleted from the file)
    arr2 = D.chain_to_atoms(cg, "E")
    arr2 = arr2[~((arr2.res_id == 10) & (arr2.atom_name == "CA"))]
    f = pdb.PDBFile(); f.set_structure(arr2); f.write(tmp_path / "p3.pdb")
    cs = D.load_structure_folder(tmp_path)
    by = {c.name: c for c in cs}
    assert set(by) == {"p1.A", "p2.A", "m1.C", "m2.D", "p3.E"} and cs.report.n_skipped == 0
    assert cs.report.n_unknown_residues == 2                         # SEP in p1 and p2
    for n in ("p1.A", "p2.A"):
        got = by[n]
        assert got.seq == ref.seq[:2] + "X" + ref.seq[3:]
        assert np.array_equal(np.isnan(got.coords), np.isnan(ref.coords))
        assert np.nanmax(np.abs(got.coords - ref.coords)) < 1e-3
    for n in ("m1.C", "m2.D"):
        assert by[n].seq == cg.seq and np.allclose(by[n].coords[:, :3], cg.coords[:, :3], atol=1e-3)
        assert np.isnan(by[n].coords[:, 3]).all()
    p3 = by["p3.E"]
    assert np.isnan(p3.coords[9, 1]).all() and not np.isnan(p3.coords[9, 0]).any()
    feats = D.featurize(p3)
    assert not feats["ca_mask"][9] and feats["bb_mask"][9].tolist() == [True, False, True, False]


def test_structure_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        D.load_structure_folder(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no structure files"):
        D.load_structure_folder(tmp_path)
    (tmp_path / "bad.cif").write_text("data_x\n_foo.bar 1\n")
    cs = D.load_structure_folder(tmp_path)
    assert len(cs) == 0 and cs.report.n_skipped == 1
    with pytest.raises(ValueError, match="bad.cif"):
        D.load_structure_folder(tmp_path, strict=True)


# ----------------------------------------------------------------------------- features and batches
def test_featurize_contract(sample):
    ch = next(c for c in sample if len(c) > 125)
    f = D.featurize(ch, D.crop_window(len(ch), 125, train=False))
    L = 125
    assert f["residue_index"][0].item() == (len(ch) - 125) // 2 and f["length"].item() == L
    ca = f["ca"][f["ca_mask"]]
    assert ca.mean(0).abs().max() < 1e-3                               # centred on observed Cα
    assert torch.allclose(f["x0"], to_model_units(f["ca"])) and torch.allclose(f["bb0"], to_model_units(f["bb"]))
    assert torch.equal(f["bb"][:, 1], f["ca"])
    d = torch.cdist(f["ca"].double(), f["ca"].double())
    expect = (d < CONTACT_CUTOFF) & f["contact_mask"]
    assert torch.equal(f["contacts"].bool(), expect)
    assert (f["bb"][~f["bb_mask"]] == 0).all()
    with pytest.raises(ValueError):
        D.featurize(ch, (10, 10_000))


def test_batch_dict_contract(sample):
    loader = D.make_loader(sample, get_preset("tiny"), train=True, seed=3)
    assert loader.batch_size is None and loader.batch_sampler.batch_size == get_preset("tiny").batch_size
    batch = next(iter(loader))
    assert set(batch) == BATCH_KEYS
    B, L = batch["tokens"].shape
    assert L <= get_preset("tiny").max_len and len(batch["names"]) == B
    shapes = {"tokens": (B, L), "mask": (B, L), "residue_index": (B, L), "ca": (B, L, 3), "ca_mask": (B, L),
              "x0": (B, L, 3), "bb": (B, L, 4, 3), "bb_mask": (B, L, 4), "bb0": (B, L, 4, 3),
              "contacts": (B, L, L), "contact_mask": (B, L, L), "cath_class": (B,), "cath_arch": (B,), "length": (B,)}
    dtypes = {"tokens": torch.long, "residue_index": torch.long, "cath_class": torch.long, "cath_arch": torch.long,
              "length": torch.long, "mask": torch.bool, "ca_mask": torch.bool, "bb_mask": torch.bool,
              "contact_mask": torch.bool, "ca": torch.float32, "bb": torch.float32, "contacts": torch.float32}
    for k, s in shapes.items():
        assert tuple(batch[k].shape) == s, k
    for k, dt in dtypes.items():
        assert batch[k].dtype == dt, k
    assert torch.equal(batch["mask"].sum(1), batch["length"])
    assert (batch["tokens"][~batch["mask"]] == D.PAD).all() and (batch["tokens"][batch["mask"]] >= 4).all()
    assert not (batch["ca_mask"] & ~batch["mask"]).any()
    assert ((batch["cath_class"] >= -1) & (batch["cath_class"] < 4)).all()
    assert ((batch["cath_arch"] >= -1) & (batch["cath_arch"] < len(D.ARCH_VOCAB))).all()


def test_random_crops_deterministic(sample):
    ds = D.ProteinDataset(sample, max_len=40, train=True, seed=7)
    long_i = [i for i, c in enumerate(sample) if len(c) > 60]
    c0 = [ds.crop_for(i) for i in long_i]
    assert c0 == [D.ProteinDataset(sample, 40, True, 7).crop_for(i) for i in long_i]
    ds.set_epoch(1)
    assert [ds.crop_for(i) for i in long_i] != c0
    ev = D.ProteinDataset(sample, max_len=40, train=False)
    assert all(ev.crop_for(i) == ((len(sample[i]) - 40) // 2, (len(sample[i]) - 40) // 2 + 40) for i in long_i)
    with pytest.raises(ValueError, match="unusable"):
        D.ProteinDataset([D.Chain("x", "AC", np.zeros((2, 4, 3), np.float32))])


def test_sampler_resume_and_buckets():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, size=203).tolist()
    s = D.LengthBucketSampler(lengths, 8, shuffle=True, seed=5, pool_batches=4)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == len(s) == 26 and sorted(sum(full, [])) == list(range(203))
    # resume after 9 batches from a checkpointed state
    st = s.state_dict(); st["start_batch"] = 9
    r = D.LengthBucketSampler(lengths, 8, shuffle=True, seed=0, pool_batches=4)
    r.load_state_dict(st)
    assert len(r) == 17 and list(r) == full[9:] and len(r) == 26 and list(r) == full
    # bucketing reduces padding versus random batches
    pad = lambda bl: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bl)
    perm = np.random.default_rng(1).permutation(203).tolist()
    assert pad(full) < 0.5 * pad([perm[i:i + 8] for i in range(0, 203, 8)])
    dl = D.LengthBucketSampler(lengths, 8, shuffle=True, seed=5, drop_last=True)
    assert all(len(b) == 8 for b in dl) and len(list(dl)) == len(dl)
    with pytest.raises(ValueError):
        s.set_start_batch(-1)


def test_loader_epochs_and_resume(sample):
    dl = D.make_loader(sample, 48, batch_size=6, train=True, seed=1)
    dl.set_epoch(3)
    e3 = [(b["names"], b["residue_index"][:, 0].tolist()) for b in dl]
    dl.set_epoch(4)
    assert [(b["names"], b["residue_index"][:, 0].tolist()) for b in dl] != e3
    dl2 = D.make_loader(sample, 48, batch_size=6, train=True, seed=1)
    dl2.load_state_dict({"seed": 1, "epoch": 3, "start_batch": 4})
    assert [(b["names"], b["residue_index"][:, 0].tolist()) for b in dl2] == e3[4:]
    ev = D.make_loader(sample, 48, batch_size=6, train=False)
    lens = [b["length"].tolist() for b in ev]
    flat = sum(lens, [])
    assert flat == sorted(flat)                                       # eval: in length order, not shuffled


def test_padding_does_not_change_real_part(sample):
    items = [D.featurize(c) for c in sample[:5]]
    batch = D.collate(items)
    for b, it in enumerate(items):
        n = it["length"].item()
        for k in ("tokens", "ca", "bb", "bb_mask", "residue_index"):
            assert torch.equal(batch[k][b, :n], it[k])
        assert torch.equal(batch["contacts"][b, :n, :n], it["contacts"])
    with pytest.raises(ValueError):
        D.collate([])


# ----------------------------------------------------------------------------- download
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_fetch_cath42_local_server(tmp_path, sample_dir):
    srv_dir = tmp_path / "srv"; srv_dir.mkdir()
    (srv_dir / "chain_set.jsonl").write_bytes((sample_dir / "chain_set.jsonl").read_bytes())
    (srv_dir / "chain_set_splits.json").write_bytes((sample_dir / "chain_set_splits.json").read_bytes())
    handler = lambda *a, **k: _Quiet(*a, directory=str(srv_dir), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True); th.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        paths = D.fetch_cath42(tmp_path / "dl", timeout=5, base_url=url)
        assert len(D.load_chain_set(paths["chain_set.jsonl"], split="train")) == 32
        out = D.fetch_cath42_main([str(tmp_path / "dl2"), "--timeout", "5", "--base-url", url])
        assert out["chain_set_splits.json"].read_bytes() == (sample_dir / "chain_set_splits.json").read_bytes()
        with pytest.raises(RuntimeError, match="nope.json"):
            D.fetch_cath42(tmp_path / "dl3", timeout=5, base_url=url, files=["nope.json"])
        assert not list((tmp_path / "dl3").iterdir())
    finally:
        httpd.shutdown(); httpd.server_close()


def test_fetch_cath42_times_out(tmp_path):
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(1)   # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(RuntimeError, match="could not download"):
            D.fetch_cath42(tmp_path, timeout=1, base_url=url)
        with pytest.raises(SystemExit):
            D.fetch_cath42_main([str(tmp_path), "--timeout", "1", "--base-url", url])
    finally:
        sock.close()


# ----------------------------------------------------------------------------- the shared pack
def test_shared_pack(shared_dir):
    jl, sp = D.default_data_paths("shared")
    cs = D.load_chain_set(jl)
    assert len(cs) == 2641 and cs.report.n_skipped == 0
    parts = D.load_chain_splits(jl)
    assert {s: len(v) for s, v in parts.items()} == {"train": 2261, "validation": 150, "test": 230}
    assert parts["train"].report.n_missing_from_file == 0 and parts["train"].report.n_skipped == 0
    names = [{c.name for c in v} for v in parts.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    cg = [c for c in cs if c.source == "cgdms"]
    assert len(cg) == 2174 and all(np.isnan(c.coords[:, 3]).all() for c in cg)
    labelled = sum(D.cath_labels(c.cath)[0] >= 0 for c in cs)
    assert labelled == 464                                  # measured; everything else is masked (-1)
    ds = D.ProteinDataset(cs, max_len=125, train=False)
    f = ds[0]
    assert not f["bb_mask"][:, 3].any() or cs[0].source != "cgdms"
