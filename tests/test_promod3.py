"ProMod3 structure DB (Debian promod3-data): binary reader, bad files, validation, homology-filtered splits, pack build, .deb."
import gzip
import io
import json
import os
import shutil
import struct
import tarfile
import tomllib
from pathlib import Path

import numpy as np
import pytest

from minifold import data as D
from minifold.data import (AMINO_ACIDS, PROMOD3_DEB_MEMBER, PROMOD3_SOURCE, Chain, backbone_geometry, build_promod3_main,
                           build_promod3_pack, default_data_paths, exact_overlaps, extract_structure_db, find_mmseqs,
                           find_structure_db, load_chain_set, load_chain_splits, load_profiles, promod3_splits, read_splits,
                           read_structure_db, read_structure_db_header, validate_structure_db_record, write_structure_db)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_JSONL, SAMPLE_SPLITS = default_data_paths("sample")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def mmseqs():
    "The mmseqs binary; skipped on a developer machine without it, a failure in CI (.ci/run installs mmseqs2)."
    exe = shutil.which("mmseqs")
    if exe is None:
        msg = "mmseqs not installed (Debian/Ubuntu: apt-get install -y mmseqs2)"
        if _in_ci(): pytest.fail(f"CI is set but {msg}: the homology filter cannot be tested")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="module")
def sample():
    return load_chain_set(SAMPLE_JSONL)


@pytest.fixture(scope="module")
def full(sample):
    "The sample chains with complete N/CA/C/O (what a ProMod3 stretch always has)."
    out = [c for c in sample if np.isfinite(c.coords).all()]
    assert len(out) == 7
    return out


@pytest.fixture()
def db(tmp_path, full):
    return write_structure_db(tmp_path / "structure_db.dat", full)


# --- the binary format ---

def test_round_trip(tmp_path, full):
    prof = [np.random.default_rng(i).dirichlet(np.ones(20), len(c)).astype(np.float32) for i, c in enumerate(full)]
    p = write_structure_db(tmp_path / "s.dat", full, dssp=["E" * len(c) for c in full], profiles=prof)
    h = read_structure_db_header(p)
    assert h["n_chains"] == 7 and h["n_residues"] == sum(len(c) for c in full) and h["stored_data"] == -1
    assert set(h["sections"]) == {"seq", "coords", "dihedrals", "solvent_accessibility", "residue_depth", "dssp",
                                  "profile", "structure_profile"}
    recs = read_structure_db(p, profiles=True)
    for r, c, pr in zip(recs, full, prof):
        assert r["name"] == c.name and r["seq"] == c.seq and r["dssp"] == "E" * len(c)
        assert r["xyz"].dtype == np.float32 and r["xyz"].shape == (len(c), 4, 3)
        assert np.abs(r["xyz"] - c.coords).max() <= 0.0051                 # stored on a 0.01 Å grid
        assert np.abs(r["profile"] - pr).max() <= 0.51e-4                   # int16 × 1e-4
        for j, a in enumerate(D.ATOMS): assert np.array_equal(r["coords"][a], r["xyz"][:, j])
    assert [r["name"] for r in read_structure_db(p, limit=3)] == [c.name for c in full[:3]]


def test_layout_is_the_documented_one(db):
    "Header bytes as decoded from ProMod3's check_io.hh / structure_db.hh (magic, version, type sizes, base types)."
    raw = db.read_bytes()
    assert struct.unpack_from("<II", raw, 0) == (1234, 2)
    assert struct.unpack_from("<12I", raw, 8) == (4, 4, 2, 8, 2, 6, 88, 40, 24, 6, 4, 1)
    assert raw[56:73] == bytes.fromhex("0000803f" "01" "0100" "0100000000000000" "0100")
    assert struct.unpack_from("<iQ", raw, 73) == (-1, 7)
    (ln,) = struct.unpack_from("<I", raw, 85)
    assert raw[89:89 + ln] == b"1GL1"                                      # upper-case PDB id, chain name next


@pytest.mark.parametrize("case, expect", [
    ("empty", "truncated"), ("header", "truncated"), ("toc", "table of contents"), ("half", "truncated"),
    ("minus1", "truncated"), ("magic", "magic number"), ("bigendian", "big-endian"), ("version", "version 7"),
    ("typesize", "type-size"), ("basetype", "base-type"), ("trailing", "unexpected bytes"), ("garbage", "magic number"),
    ("count", "holds"), ("zero", "0 chains")])
def test_bad_files_are_clear_errors(tmp_path, db, case, expect):
    raw = db.read_bytes()
    bad = {"empty": b"", "header": raw[:50], "toc": raw[:140], "half": raw[:len(raw) // 2], "minus1": raw[:-1],
           "magic": b"PK\x03\x04" + raw[4:], "bigendian": struct.pack(">I", 1234) + raw[4:],
           "version": raw[:4] + struct.pack("<I", 7) + raw[8:], "typesize": raw[:32] + struct.pack("<I", 96) + raw[36:],
           "basetype": raw[:56] + struct.pack(">f", 1.0) + raw[60:], "trailing": raw + b"\x00" * 12,
           "garbage": np.random.default_rng(1).bytes(100_000),
           "zero": raw[:77] + struct.pack("<Q", 0) + raw[85:]}.get(case)
    if case == "count":                                                     # the coordinate section's count is off by one
        h = read_structure_db_header(db)
        o = h["sections"]["coords"] - 8
        bad = raw[:o] + struct.pack("<Q", h["n_residues"] + 1) + raw[o + 8:]
    p = tmp_path / f"{case}.dat"
    p.write_bytes(bad)
    with pytest.raises(ValueError) as e:
        read_structure_db(p)
    assert str(p) in str(e.value) and expect in str(e.value), str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_structure_db(tmp_path / "nope.dat")


def test_writer_refuses_incomplete_backbones(tmp_path, sample):
    with pytest.raises(ValueError, match="complete finite"):
        write_structure_db(tmp_path / "x.dat", [sample[0]])                 # a cgdms chain: O atoms are NaN


# --- validation ---

def test_validation_reasons(full):
    c = full[-1]
    r = {"name": c.name, "seq": c.seq, "xyz": c.coords.copy()}
    assert validate_structure_db_record(r) is None
    g = backbone_geometry(r["xyz"])
    assert g["n_bad"] == 0 and abs(np.median(g["ca_ca"]) - 3.80) < 0.05
    bad = r["xyz"].copy(); bad[5:10, 1] += 0.5                              # five displaced Cα
    assert validate_structure_db_record({**r, "xyz": bad}) == "bad_geometry"
    assert validate_structure_db_record({**r, "xyz": bad}, max_bad_fraction=0.5) is None
    cis = r["xyz"].copy()
    assert backbone_geometry(cis, caca_tol=0.01)["counts"]["CA-CA"] > 0     # tolerances are parameters
    nan = r["xyz"].copy(); nan[0, 0, 0] = np.inf
    assert validate_structure_db_record({**r, "xyz": nan}) == "nonfinite_coords"
    assert validate_structure_db_record({**r, "seq": c.seq[:19], "xyz": r["xyz"][:19]}) == "too_short"
    assert validate_structure_db_record({**r, "seq": c.seq[:19], "xyz": r["xyz"][:19]}, min_length=3) is None
    assert validate_structure_db_record({**r, "seq": "1" + c.seq[1:]}) == "bad_sequence"
    assert validate_structure_db_record({**r, "seq": c.seq + "A"}) == "length_mismatch"


# --- splits: exact overlaps and MMseqs2 homology ---

def _ref_eval(sample):
    sp = read_splits(SAMPLE_SPLITS)
    ev = set(sp["validation"]) | set(sp["test"])
    return {c.name: c.seq for c in sample if c.name in ev}, sp


def _mutate(seq, frac, seed=0):
    rng = np.random.default_rng(seed)
    return "".join(AMINO_ACIDS[rng.integers(20)] if rng.random() < frac else a for a in seq)


def test_exact_overlaps(sample):
    ev, _ = _ref_eval(sample)
    t = ev["4abm.A"]
    cand = {"same.A": t, "win.A": "W" * 25 + t[3:23] + "W" * 25, "w19.A": "W" * 25 + t[3:22] + "W" * 25,
            "short.A": t[4:14], "other.A": "ACDEFGHIKL" * 5}
    got = {h["query"]: (h["kind"], h["target"]) for h in exact_overlaps(cand, ev)}
    assert got == {"same.A": ("identical", "4abm.A"), "win.A": ("window", "4abm.A"), "short.A": ("substring", "4abm.A")}


def test_homology_filter_removes_near_duplicate(sample, mmseqs, capsys):
    ev, sp = _ref_eval(sample)
    t_val, t_test = ev["2abz.A"], ev["2nn4.A"]
    unrelated = "".join(np.random.default_rng(5).choice(list(AMINO_ACIDS), 90))
    cand = {"dupval.A": _mutate(t_val, 0.35, 1),                 # ~65 % identical to a validation chain, full length
            "duptest.A": _mutate(t_test, 0.35, 2),               # ~65 % identical to a test chain
            "half.A": t_test[:45] + unrelated[:60],              # 45 of the test chain's 62 residues inside another protein
            "unrelated.A": unrelated, "train.A": sample[26].seq}  # 1gl1.A, a sample train chain
    splits, counts = promod3_splits(cand, SAMPLE_SPLITS, SAMPLE_JSONL, threads=1, mmseqs=mmseqs)
    out = capsys.readouterr().out
    assert splits["train"] == ["unrelated.A", "train.A"]
    assert splits["validation"] == sp["validation"] and splits["test"] == sp["test"]
    assert counts["removed_similar_to_validation"] == 1 and counts["removed_similar_to_test"] == 2
    assert counts["removed_similar_to_test_mmseqs"] + counts["removed_similar_to_test_window"] == 2
    assert counts["removed_total"] == 3 and counts["final_train"] == 2 and counts["candidates"] == 5
    assert "removed 1 similar to validation, 2 similar to test" in out and "train 2" in out
    # stricter coverage mode: the half-covered chain is no longer an MMseqs2 hit when both sides must be covered
    hits = D.mmseqs_hits({"half.A": cand["half.A"]}, {"2nn4.A": t_test}, cov_mode="both", threads=1, mmseqs=mmseqs)
    hits_e = D.mmseqs_hits({"half.A": cand["half.A"]}, {"2nn4.A": t_test}, cov_mode="either", threads=1, mmseqs=mmseqs)
    assert len(hits_e) == 1 and hits_e[0]["tcov"] >= 0.5 > hits_e[0]["qcov"] and hits_e[0]["fident"] > 0.9
    assert hits == []
    same = D.mmseqs_hits({"x.A": t_test}, {"2nn4.A": t_test}, threads=1, mmseqs=mmseqs)
    assert len(same) == 1 and same[0]["qcov"] == same[0]["tcov"] == 1.0 and same[0]["fident"] == 1.0


def test_mmseqs_missing_is_a_clear_error(sample):
    with pytest.raises(RuntimeError, match="apt-get install -y mmseqs2"):
        find_mmseqs("/nonexistent/mmseqs")
    with pytest.raises(RuntimeError, match="mmseqs2"):
        promod3_splits({"x.A": "ACDEFGHIKLMNPQRSTVWY"}, SAMPLE_SPLITS, SAMPLE_JSONL, mmseqs="/nonexistent/mmseqs")


# --- the pack build and the console command ---

def _synthetic_db(tmp_path, sample, full):
    v = next(c for c in sample if c.name == "2abz.A")                       # validation chain, complete backbone
    near = Chain("9zzz.A", "".join(a if i % 4 else "G" for i, a in enumerate(v.seq)), v.coords)
    bent = Chain("9bnt.A", full[4].seq, full[4].coords.copy()); bent.coords[10:20, 2] += 0.5
    short = Chain("9sht.A", v.seq[:15], v.coords[:15])
    chains = full[:4] + [near, bent, short, v]
    prof = [np.random.default_rng(i).dirichlet(np.ones(20), len(c)) for i, c in enumerate(chains)]
    prof[3] = np.zeros((len(chains[3]), 20))                                # no profile stored for it: a counted skip
    return write_structure_db(tmp_path / "structure_db.dat", chains, profiles=prof)


def test_build_pack(tmp_path, sample, full, mmseqs):
    dbp = _synthetic_db(tmp_path, sample, full)
    rep = build_promod3_pack(dbp, tmp_path / "pack", SAMPLE_SPLITS, SAMPLE_JSONL, threads=1, mmseqs=mmseqs,
                             profiles=True, verbose=False)
    assert rep["n_chains_read"] == 8 and rep["n_valid"] == 6
    assert rep["skipped"] == {"bad_geometry": 1, "too_short": 1}
    assert rep["removed_similar_to_validation"] == 2 and rep["removed_total"] == 2     # 9zzz.A (mmseqs), 2abz.A (same name)
    assert rep["final_train"] == 4 and rep["n_records_written"] == 4 + 10 + 9
    out = tmp_path / "pack"
    assert json.loads((out / "build_report.json").read_text())["final_train"] == 4
    parts = load_chain_splits(out / "chain_set.jsonl.gz")
    assert [c.name for c in parts["train"]] == [c.name for c in full[:4]]
    assert parts["train"].report.n_skipped == 0 and parts["train"].report.n_missing_from_file == 0
    assert all(c.source == PROMOD3_SOURCE and c.cath == [] for c in parts["train"])
    for c, f in zip(parts["train"], full): assert np.abs(c.coords - f.coords).max() <= 0.0051
    ref = {c.name: c for c in sample}
    for c in parts["validation"]:                                          # reference records copied unchanged
        assert np.array_equal(np.isnan(c.coords), np.isnan(ref[c.name].coords))
        assert np.allclose(c.coords, ref[c.name].coords, equal_nan=True) and c.source == ref[c.name].source
    with gzip.open(out / "chain_set.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    assert set(first) == {"name", "seq", "CATH", "num_chains", "source", "coords"} and first["num_chains"] is None
    assert set(first["coords"]) == {"N", "CA", "C", "O"}
    prof = load_profiles(out / "profiles.npz")                             # the train chains' profiles, validated
    assert sorted(prof) == sorted(c.name for c in full[:3]) and prof[full[0].name].shape == (len(full[0]), 20)
    assert rep["profiles"]["n_chains"] == 3 and rep["profiles"]["skipped"] == {"bad_row_sum": 1}


def test_cli_structure_db(tmp_path, sample, full, mmseqs, capsys):
    dbp = _synthetic_db(tmp_path, sample, full)
    assert build_promod3_main(["--structure-db", str(dbp), "--out", str(tmp_path / "cli"), "--ref-splits", str(SAMPLE_SPLITS),
                               "--ref-chain-set", str(SAMPLE_JSONL), "--threads", "1", "--mmseqs", mmseqs]) is None  # exit 0
    rep = json.loads((tmp_path / "cli" / "build_report.json").read_text())
    assert rep["final_train"] == 4 and len(read_splits(tmp_path / "cli" / "chain_set_splits.json")["train"]) == 4
    out = capsys.readouterr().out
    assert "homology filter" in out and "train 4, validation 10, test 9" in out
    (tmp_path / "bad.dat").write_bytes(b"garbage" * 100)
    with pytest.raises(SystemExit):
        build_promod3_main(["--structure-db", str(tmp_path / "bad.dat"), "--out", str(tmp_path / "cli2"),
                            "--ref-splits", str(SAMPLE_SPLITS), "--ref-chain-set", str(SAMPLE_JSONL), "--mmseqs", mmseqs])
    assert "bad.dat" in capsys.readouterr().out


def test_console_script_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["minifold-build-promod3"] == "minifold.data:build_promod3_main"
    assert "data/promod3/" in (ROOT / ".gitignore").read_text().splitlines()


def _ar(members):
    out = [b"!<arch>\n"]
    for name, blob in members:
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode() + blob + b"\n" * (len(blob) % 2))
    return b"".join(out)


def _tar(files, mode="w:xz"):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode=mode) as tf:
        for name, blob in files:
            ti = tarfile.TarInfo(name); ti.size = len(blob); tf.addfile(ti, io.BytesIO(blob))
    return bio.getvalue()


def _deb(path, payload, mode="w:xz", ext="xz"):
    control = _tar([("./control", b"Package: promod3-data\nVersion: 0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
                                  b"Description: test\n")], mode)
    data = _tar([("./usr/share/doc/promod3-data/copyright", b"Apache-2.0"), ("./" + PROMOD3_DEB_MEMBER, payload)], mode)
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), (f"control.tar.{ext}", control), (f"data.tar.{ext}", data)]))
    return path


@pytest.mark.parametrize("use_dpkg", [False, True])
def test_extract_from_deb(tmp_path, db, use_dpkg):
    if use_dpkg and shutil.which("dpkg-deb") is None: pytest.skip("dpkg-deb not installed (the pure-Python path is tested)")
    deb = _deb(tmp_path / "promod3-data_0_all.deb", db.read_bytes())
    got = extract_structure_db(deb, tmp_path / "out", use_dpkg=use_dpkg)
    assert got == tmp_path / "out" / "structure_db.dat" and got.read_bytes() == db.read_bytes()
    assert len(read_structure_db(got)) == 7 and sorted(p.name for p in got.parent.iterdir()) == ["structure_db.dat"]


def test_extract_errors(tmp_path, db):
    gz = _deb(tmp_path / "gz.deb", db.read_bytes(), mode="w:gz", ext="gz")   # other compressions are read too
    assert extract_structure_db(gz, tmp_path / "o1", use_dpkg=False).read_bytes() == db.read_bytes()
    cut = tmp_path / "cut.deb"; cut.write_bytes(gz.read_bytes()[:2000])
    with pytest.raises(ValueError, match="cut.deb"):
        extract_structure_db(cut, tmp_path / "o2", use_dpkg=False)
    notdeb = tmp_path / "x.deb"; notdeb.write_bytes(b"hello world" * 10)
    with pytest.raises(ValueError, match="not a Debian package"):
        extract_structure_db(notdeb, tmp_path / "o3", use_dpkg=False)
    other = tmp_path / "other.deb"
    other.write_bytes(_ar([("debian-binary", b"2.0\n"), ("data.tar.xz", _tar([("./usr/bin/x", b"x")]))]))
    with pytest.raises(ValueError, match="holds no"):
        extract_structure_db(other, tmp_path / "o4", use_dpkg=False)
    with pytest.raises(FileNotFoundError, match="apt-get download promod3-data"):
        extract_structure_db(tmp_path / "missing.deb", tmp_path / "o5")


# --- the real Debian file, when it is here ---

def test_real_structure_db(shared_dir):
    p = find_structure_db()
    if p is None: pytest.skip("no structure_db.dat (run `apt-get download promod3-data` and minifold-build-promod3)")
    h = read_structure_db_header(p)
    assert (h["n_chains"], h["n_residues"], h["stored_data"]) == (21119, 4561225, -1)
    recs = read_structure_db(p, limit=300)
    assert recs[0]["name"] == "12as.A" and len(recs[0]["seq"]) == 327 and recs[0]["dssp"][:4] == "CHHH"
    d = np.concatenate([backbone_geometry(r["xyz"])["ca_ca"] for r in recs])
    assert abs(np.median(d) - 3.80) < 0.02 and ((d > 3.6) & (d < 4.0)).mean() > 0.99   # real proteins: Cα–Cα ≈ 3.8 Å
    # the same PDB chain in the shared pack (PDB frame): identical to the 0.01 Å storage grid
    shared = {c.name: c for c in load_chain_set(shared_dir / "pdb_chains" / "chain_set.jsonl.gz")}
    r = next(r for r in read_structure_db(p) if r["name"] == "1a2x.B")
    c = shared["1a2x.B"]
    k = c.seq.find(r["seq"])
    ref = c.coords[k:k + len(r["seq"])]
    ok = np.isfinite(ref)                                                   # a cgdms copy: N, CA, C only (O is NaN)
    assert k >= 0 and ok[:, :3].all() and np.abs(ref - r["xyz"])[ok].max() <= 0.011
