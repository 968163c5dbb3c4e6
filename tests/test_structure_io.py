"PDB/mmCIF writing and reading: round trips through biotite, acceptance by TM-align/TMscore, B-factors, errors."
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from minifold.structure_io import (write_structure, read_structure, structure_string, to_atom_array, sample_rmsf,
                                   validate_sequence, read_fasta, CLIError)



@pytest.fixture(scope="module")
def real_chain(sample_dir):
    from minifold.data import load_chain_set
    chains = load_chain_set(sample_dir / "chain_set.jsonl", limit=5)
    # a chain with all four backbone atoms observed for most residues
    return max(chains, key=lambda c: np.isfinite(c.coords).all((-1, -2)).sum())


@pytest.mark.parametrize("ext", ["pdb", "cif", "mmcif"])
def test_backbone_roundtrip_and_tmalign(tmp_path, real_chain, ext):
    xyz = real_chain.coords                                         # [L, 4, 3] Å, NaN missing
    p = write_structure(tmp_path / f"x.{ext}", xyz, real_chain.seq, chain_id="C", b_factors=np.linspace(0, 99, len(xyz)))
    r = read_structure(p)
    present = np.isfinite(xyz).all(-1).any(-1)                     # residues with at least one atom are written
    expect = "".join(c if c in "ACDEFGHIKLMNPQRSTVWY" else "X" for c in np.array(list(real_chain.seq.upper()))[present])
    assert r["chain_id"] == "C" and r["seq"] == expect and list(r["res_id"]) == list(np.nonzero(present)[0] + 1)
    xyz, obs = xyz[present], np.isfinite(xyz[present]).all(-1)
    assert np.allclose(r["bb"][obs], xyz[obs], atol=2e-3) and np.isnan(r["bb"][~obs]).all()
    bf = np.linspace(0, 99, len(present))[present]
    assert np.allclose(r["b_factor"][obs[:, 1]], bf[obs[:, 1]], atol=6e-3)
    # TM-align (independent C++ implementation) accepts the coordinates + sequence read back from the file
    tm_align = pytest.importorskip("tmtools").tm_align
    ca = r["ca"][np.isfinite(r["ca"]).all(-1)].astype(np.float64)
    seq = "".join(a for a, ok in zip(r["seq"], np.isfinite(r["ca"]).all(-1)) if ok)
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0].numpy()
    res = tm_align(ca, ca @ R.T + 3.0, seq, seq)
    assert res.tm_norm_chain1 > 0.999 and res.rmsd < 1e-2


def test_ca_trace_files(tmp_path):
    L = 30
    ca = np.cumsum(np.random.default_rng(1).normal(size=(L, 3)), 0) * 2.0
    seq = "ACDEFGHIKLMNPQRSTVWYXACDEFGHIK"
    for ext in ("pdb", "cif"):
        p = write_structure(tmp_path / f"t.{ext}", torch.tensor(ca), seq)
        text = p.read_text()
        assert text.count(" CA ") >= L if ext == "pdb" else "CA" in text
        r = read_structure(p)
        assert r["seq"] == seq and np.allclose(r["ca"], ca, atol=2e-3) and np.isnan(r["bb"][:, [0, 2, 3]]).all()
        assert list(r["res_id"]) == list(range(1, L + 1))
    lines = [l for l in (tmp_path / "t.pdb").read_text().splitlines() if l.startswith("ATOM")]
    assert lines[20][17:20] == "UNK" and lines[0][17:20] == "ALA" and lines[0][21] == "A"


def test_mask_and_nan_residues_are_skipped(tmp_path):
    ca = np.arange(30, dtype=float).reshape(10, 3)
    ca[4] = np.nan
    mask = np.ones(10, bool); mask[7] = False
    r = read_structure(write_structure(tmp_path / "m.pdb", ca, "A" * 10, mask=mask))
    assert list(r["res_id"]) == [1, 2, 3, 4, 6, 7, 9, 10]


def test_pdb_string_and_multichain_reading(tmp_path):
    s = structure_string(np.zeros((3, 3)) + np.arange(3)[:, None] * 3.8, "GGG")
    assert s.count("ATOM") == 3
    import biotite.structure as struc
    from biotite.structure.io import pdb
    a = to_atom_array(np.random.rand(5, 4, 3) * 10, "MKVLA", chain_id="A")
    b = to_atom_array(np.random.rand(4, 3) * 10, "GGGG", chain_id="B")
    f = pdb.PDBFile(); f.set_structure(struc.concatenate([a, b])); f.write(str(tmp_path / "two.pdb"))
    assert read_structure(tmp_path / "two.pdb")["seq"] == "MKVLA"
    assert read_structure(tmp_path / "two.pdb", chain_id="B")["seq"] == "GGGG"
    with pytest.raises(ValueError, match="chain 'Q'"): read_structure(tmp_path / "two.pdb", chain_id="Q")


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="coords must be"): write_structure(tmp_path / "a.pdb", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="sequence length"): write_structure(tmp_path / "a.pdb", np.zeros((4, 3)), "AA")
    with pytest.raises(ValueError, match="format"): write_structure(tmp_path / "a.xyz", np.zeros((4, 3)))
    with pytest.raises(FileNotFoundError): read_structure(tmp_path / "nope.pdb")
    (tmp_path / "junk.cif").write_text("this is not a cif\n")
    with pytest.raises(ValueError): read_structure(tmp_path / "junk.cif")
    (tmp_path / "empty.pdb").write_text("REMARK nothing\nEND\n")
    with pytest.raises(ValueError): read_structure(tmp_path / "empty.pdb")


def test_sequence_validation_and_fasta(tmp_path):
    assert validate_sequence("acdx") == "ACDX"
    for bad in ["", "   ", "AC", "MKV-L", "MKVB", "MK1"]:
        with pytest.raises(CLIError): validate_sequence(bad)
    f = tmp_path / "x.fa"
    f.write_text(">one desc\nMKV\nLAG\n\n>two\nACDEF\n")
    assert read_fasta(f) == [("one", "MKVLAG"), ("two", "ACDEF")]
    f.write_text("MKV\n>x\nAAA\n")
    with pytest.raises(CLIError, match="not a FASTA"): read_fasta(f)


def test_sample_rmsf():
    pytest.importorskip("minifold.metrics")
    x = torch.randn(1, 12, 3) * 5
    R = torch.linalg.qr(torch.randn(3, 3))[0]
    same = torch.cat([x, x @ R.T + 2.0, x + 1.0])               # rigid copies: zero spread
    assert np.allclose(sample_rmsf(same), 0, atol=1e-3)
    y = same.clone(); y[1, 5] += 3.0
    rm = sample_rmsf(y)
    assert rm.argmax() == 5 and sample_rmsf(x).shape == (12,) and (sample_rmsf(x) == 0).all()


# --- the TM-score programs themselves (Debian package tm-align: /usr/bin/TMalign, /usr/bin/TMscore) read our files ---
# TM-align 20190822 (the Debian version) detects mmCIF input by itself, so PDB *and* mmCIF are checked with both programs.

def _program(name):
    exe = shutil.which(name)
    if exe is None: pytest.skip(f"{name} binary not installed (Debian/Ubuntu: apt-get install tm-align; CI installs it)")
    return exe


def _tm_of(exe, model, native):
    "Run TMalign/TMscore on two files; the TM-score normalised by the second (native) structure, and the stdout."
    p = subprocess.run([exe, str(model), str(native)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    if exe.endswith("TMalign"):
        m = re.search(r"TM-score=\s*([\d.]+)\s*\(if normalized by length of Chain_2", p.stdout)
    else:
        m = re.search(r"^TM-score\s*=\s*([\d.]+)", p.stdout, re.M)
    assert m, f"{exe} printed no TM-score for {model} vs {native}:\n{p.stdout[-2000:]}"
    n = re.search(r"Length of Chain_2:\s*(\d+)|Structure2:.*Length=\s*(\d+)", p.stdout)
    return float(m.group(1)), int(next(g for g in n.groups() if g)), p.stdout


@pytest.fixture(scope="module")
def full_backbone_chain(sample_dir):
    "The bundled chain with the most residues whose N, CA, C and O are all observed (most sample chains lack O)."
    from minifold.data import load_chain_set
    chains = [c for c in load_chain_set(sample_dir / "chain_set.jsonl") if len(c) <= 160]
    c = max(chains, key=lambda c: np.isfinite(c.coords).all((-1, -2)).sum())
    full = np.isfinite(c.coords).all((-1, -2))
    assert full.sum() >= 30, "data/sample should hold a chain with observed O atoms"
    return c.name, "".join(np.array(list(c.seq))[full]), c.coords[full].astype(np.float64)   # [L, 4, 3] Å, all finite


@pytest.mark.parametrize("atoms", ["ca", "backbone"])
@pytest.mark.parametrize("ext", ["pdb", "cif"])
def test_tm_programs_read_our_files(tmp_path, full_backbone_chain, atoms, ext):
    from minifold.metrics import tm_score
    tmalign, tmscore = _program("TMalign"), _program("TMscore")
    name, seq, bb = full_backbone_chain
    L = len(seq)
    noised = bb + np.random.default_rng(0).normal(size=bb.shape) * 1.5           # ~2.6 Å Cα displacement
    x, y = (bb[:, 1], noised[:, 1]) if atoms == "ca" else (bb, noised)
    truth = write_structure(tmp_path / f"truth.{ext}", x, seq)
    model = write_structure(tmp_path / f"model.{ext}", y, seq)
    if atoms == "backbone":                                                       # really N/CA/C/O on disk
        assert {"N", "CA", "C", "O"} <= set(re.findall(r"\b(N|CA|C|O)\b", truth.read_text()))
    ours = float(tm_score(torch.tensor(noised[None, :, 1]), torch.tensor(bb[None, :, 1]), search="exact")[0])
    assert 0.3 < ours < 0.95, ours                                                # a non-trivial test case
    # TMscore: index (residue-number) correspondence, the semantics of minifold.metrics.tm_score
    tm, n, _ = _tm_of(tmscore, truth, truth)
    assert n == L and tm == pytest.approx(1.0, abs=1e-4)
    tm_idx, n, out = _tm_of(tmscore, model, truth)
    assert n == L and int(re.search(r"Number of residues in common=\s*(\d+)", out).group(1)) == L
    assert tm_idx == pytest.approx(ours, abs=0.01), (tm_idx, ours)
    # TMalign: sequence-independent structural alignment; it must read the files, give 1 for identical
    # structures and, for a mild perturbation, find at least the index alignment's score (up to its heuristics)
    tm, n, out = _tm_of(tmalign, truth, truth)
    assert n == L and tm == pytest.approx(1.0, abs=1e-4) and int(re.search(r"Aligned length=\s*(\d+)", out).group(1)) == L
    tm, n, _ = _tm_of(tmalign, model, truth)
    assert n == L and ours - 0.01 <= tm <= 1.0, (tm, ours)
    print(f"{name} ({L} residues, {atoms}, .{ext}): minifold {ours:.4f}, TMscore {tm_idx:.4f}, TMalign {tm:.4f}")
