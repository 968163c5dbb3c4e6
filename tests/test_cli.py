"`minifold-sample`: every bad input gives one clear stderr line and a non-zero exit; a good run writes PDBs + metrics."
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minifold.structure_io import sample_main, read_structure, write_structure

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("minifold.model")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    "An untrained tiny model saved in the trainer's checkpoint format (preset + model + EMA {decay, shadow})."
    from minifold.config import get_preset
    from minifold.model import build_model
    from minifold.trainer import EMA, save_checkpoint, CKPT_FORMAT
    preset = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(preset)
    ema = EMA(model, preset.ema_decay)
    with torch.no_grad():                                 # make EMA differ from the raw weights, to see which is used
        for v in ema.shadow.values(): v.mul_(0.5)
    d = tmp_path_factory.mktemp("ckpt")
    state = {"format": CKPT_FORMAT, "preset": preset.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
             "epoch": 1}
    save_checkpoint(d / "last.pt", state)
    return d / "last.pt"


def run_cli(args, capsys):
    rc = sample_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(rc, err, *needles):
    assert rc != 0, "bad input must give a non-zero exit code"
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("minifold-sample: error:") and "Traceback" not in err
    for n in needles: assert n in lines[0], (n, lines[0])


SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"  # 53 residues


@pytest.mark.parametrize("args,needles", [
    (["--seq", "MKV1LAG"], ["invalid character", "'1' at 4"]),
    (["--seq", "MKVJ*"], ["invalid character", "'J' at 4", "'*' at 5"]),
    (["--seq", ""], ["empty sequence"]),
    (["--seq", "MK"], ["too short"]),
    (["--seq", "A" * 200], ["exceeds", "max_len 64", "--crop"]),
    ([], ["no input"]),
    (["--seq", SEQ, "--steps", "0"], ["--steps"]),
    (["--seq", SEQ, "--steps", "5000"], ["exceeds"]),
    (["--seq", SEQ, "--n-samples", "0"], ["--n-samples"]),
    (["--seq", SEQ, "--eta", "-0.5"], ["--eta"]),
    (["--seq", SEQ, "--steps", "ten"], ["invalid int value"]),
    (["--seq", SEQ, "--format", "xyz"], ["invalid choice"]),
    (["--seq", SEQ, "--device", "cuda:7"] if not torch.cuda.is_available() else ["--seq", SEQ, "--device", "nonsense"], ["device"]),
])
def test_bad_arguments(args, needles, tiny_ckpt, tmp_path, capsys):
    rc, out, err = run_cli(["--checkpoint", tiny_ckpt, "--out-dir", tmp_path, "--quiet", *args], capsys)
    assert_one_line_error(rc, err, *needles)
    assert not list(tmp_path.glob("*.pdb"))


def test_bad_checkpoints(tmp_path, capsys, tiny_ckpt):
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / "missing.pt"], capsys)
    assert_one_line_error(rc, err, "checkpoint not found", "preset name")
    raw = tiny_ckpt.read_bytes()
    for name, data in [("corrupt.pt", os.urandom(2000)),                  # random bytes
                       ("truncated.pt", raw[: len(raw) // 2]),            # a half-written zip archive
                       ("header_only.pt", raw[:64])]:
        (tmp_path / name).write_bytes(data)
        rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / name], capsys)
        assert_one_line_error(rc, err, f"cannot read checkpoint {tmp_path / name}: not a readable PyTorch checkpoint "
                                       "(file truncated or corrupt; ")
        assert rc == 1 and err.rstrip().endswith(("Error)", "Exception)")), err      # ends with the exception class
        assert not any(w in err for w in ("PytorchStreamReader", "miniz", "central directory")), err   # no torch internals
    torch.save({"model": {}, "path": Path("x")}, tmp_path / "pickled_object.pt")   # readable, but not weights-only
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / "pickled_object.pt"], capsys)
    assert_one_line_error(rc, err, "pickled_object.pt: it holds a Python object (pathlib.", "weights_only=True")
    torch.save({"hello": 1}, tmp_path / "nomodel.pt")
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / "nomodel.pt"], capsys)
    assert_one_line_error(rc, err, "not a usable Mini-Fold checkpoint")
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path], capsys)   # a folder without ckpt/
    assert_one_line_error(rc, err, "checkpoint")


def test_state_dict_mismatch_is_summarised(tmp_path, capsys, tiny_ckpt):
    "Weights that do not fit the preset: counts of missing / unexpected keys with examples, not torch's header line."
    from minifold.config import get_preset
    ck = torch.load(tiny_ckpt, weights_only=True)
    ck["preset"] = get_preset("small").to_dict()                   # tiny weights under the `small` preset
    torch.save(ck, tmp_path / "mismatch.pt")
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / "mismatch.pt"], capsys)
    assert_one_line_error(rc, err, "does not match preset small:", "missing keys", "unexpected keys", "(e.g. ")
    assert rc == 1 and "Error(s) in loading state_dict" not in err
    ck = torch.load(tiny_ckpt, weights_only=True)                  # one renamed parameter: exact counts and names
    k0 = next(iter(ck["model"]))
    ck["model"]["renamed.weight"] = ck["model"].pop(k0)
    ck["ema"]["shadow"].pop(k0, None)
    torch.save(ck, tmp_path / "renamed.pt")
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / "renamed.pt"], capsys)
    assert_one_line_error(rc, err, "does not match preset tiny: 1 missing keys, 1 unexpected keys", f"missing {k0}",
                          "unexpected renamed.weight")


def test_encoder_checkpoint_is_not_a_minifold_checkpoint(tmp_path, capsys):
    "A Stage-1 encoder checkpoint passed as --checkpoint: the mismatch summary plus a hint that it is an encoder file."
    from minifold.encoder import ContactClassifier, save_encoder
    from minifold.config import get_encoder_preset
    torch.manual_seed(0)
    enc = ContactClassifier(get_encoder_preset("tiny"))
    save_encoder(enc, tmp_path / "encoder.pt")
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tmp_path / "encoder.pt", "--out-dir", tmp_path, "--quiet"], capsys)
    assert_one_line_error(rc, err, "does not match preset tiny:", "missing keys", "unexpected keys", "Stage-1 encoder checkpoint")
    assert rc == 1 and "Error(s) in loading state_dict" not in err and not list(tmp_path.glob("*.pdb"))


def test_guidance_warning_without_cfg_training(tmp_path, capsys, tiny_ckpt):
    "--guidance != 1 with a preset trained at p_uncond = 0 (v10–v12b style) runs but warns; CFG-trained presets do not."
    ck = torch.load(tiny_ckpt, weights_only=True)
    ck["preset"]["p_uncond"] = 0.0                                  # same architecture, no CFG dropout in training
    torch.save(ck, tmp_path / "nocfg.pt")
    common = ["--seq", SEQ, "--steps", 2, "--quiet", "--out-dir", tmp_path / "o"]
    rc, _, err = run_cli([*common, "--checkpoint", tmp_path / "nocfg.pt", "--guidance", 1.5], capsys)
    assert rc == 0, err
    warn = [l for l in err.splitlines() if "--guidance" in l]
    assert len(warn) == 1 and warn[0].startswith("minifold-sample: warning:") and "p_uncond = 0" in warn[0], err
    assert (tmp_path / "o" / "seq1_s0.pdb").exists()
    rc, _, err = run_cli([*common, "--checkpoint", tmp_path / "nocfg.pt", "--guidance", 1.0], capsys)
    assert rc == 0 and "p_uncond" not in err
    rc, _, err = run_cli([*common, "--checkpoint", tiny_ckpt, "--guidance", 1.5], capsys)   # tiny: p_uncond 0.1
    assert rc == 0 and "p_uncond" not in err


def test_load_model_uses_ema_and_run_folders(tiny_ckpt, tmp_path):
    from minifold.structure_io import load_model
    ck = torch.load(tiny_ckpt, weights_only=True)
    model, preset, info = load_model(tiny_ckpt)
    assert preset.name == "tiny" and info["weights"] == "ema" and not model.training
    name, shadow = next(iter(ck["ema"]["shadow"].items()))
    assert torch.equal(dict(model.named_parameters())[name].detach(), shadow)
    raw, _, info = load_model(tiny_ckpt, use_ema=False)
    assert info["weights"] == "model" and torch.equal(dict(raw.named_parameters())[name].detach(), ck["model"][name])
    (tmp_path / "run" / "ckpt").mkdir(parents=True)
    shutil.copy(tiny_ckpt, tmp_path / "run" / "ckpt" / "last.pt")
    assert load_model(tmp_path / "run")[2]["source"].endswith("last.pt")


def test_bad_fasta_and_reference(tmp_path, capsys, tiny_ckpt):
    rc, _, err = run_cli(["--fasta", tmp_path / "none.fa", "--checkpoint", tiny_ckpt], capsys)
    assert_one_line_error(rc, err, "FASTA file not found")
    (tmp_path / "bad.fa").write_text("MKVLAG\n")
    rc, _, err = run_cli(["--fasta", tmp_path / "bad.fa", "--checkpoint", tiny_ckpt], capsys)
    assert_one_line_error(rc, err, "not a FASTA file")
    (tmp_path / "bad2.fa").write_text(">a\nMKV\n>b\nMK8V\n")
    rc, _, err = run_cli(["--fasta", tmp_path / "bad2.fa", "--checkpoint", tiny_ckpt], capsys)
    assert_one_line_error(rc, err, "b: invalid character")
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tiny_ckpt, "--reference", tmp_path / "nope.pdb"], capsys)
    assert_one_line_error(rc, err, "--reference", "not found")
    write_structure(tmp_path / "short.pdb", np.cumsum(np.ones((10, 3)), 0) * 2.2, "A" * 10)
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", tiny_ckpt, "--reference", tmp_path / "short.pdb"], capsys)
    assert_one_line_error(rc, err, "differs from reference")


def test_good_run_with_reference(tmp_path, capsys, tiny_ckpt, sample_dir):
    from minifold.data import load_chain_set
    ch = next(c for c in load_chain_set(sample_dir / "chain_set.jsonl") if 30 <= len(c) <= 64 and np.isfinite(c.coords[:, 1]).all())
    write_structure(tmp_path / "ref.cif", ch.coords, ch.seq, chain_id="B")
    (tmp_path / "in.fa").write_text(f">{ch.name} some description\n{ch.seq[:20]}\n{ch.seq[20:]}\n")
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["--fasta", tmp_path / "in.fa", "--checkpoint", tiny_ckpt, "--n-samples", 2, "--steps", 3,
                               "--eta", 0.5, "--guidance", 1.5, "--out-dir", out, "--reference", tmp_path / "ref.cif",
                               "--quiet"], capsys)
    assert rc == 0, err
    pdbs = sorted(out.glob("*.pdb"))
    assert [p.name for p in pdbs] == [f"{ch.name}_s0.pdb", f"{ch.name}_s1.pdb"]
    for p in pdbs:
        r = read_structure(p)
        assert r["seq"] == ch.seq and np.isfinite(r["bb"]).all()        # tiny is v14: full N/CA/C/O backbone
        assert (r["b_factor"] >= 0).all() and r["b_factor"].max() > 0   # per-residue sample spread
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 and {"tm", "rmsd", "gdt_ts", "gdt_ha", "steps", "eta", "guidance"} <= set(rows[0])
    assert all(0 <= float(r["tm"]) <= 1 and float(r["rmsd"]) > 0 for r in rows)
    assert "metrics.csv" in stdout


def test_preset_name_crop_and_determinism(tmp_path, capsys, tiny_ckpt):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        rc, _, err = run_cli(["--seq", SEQ, "--seq", "A" * 70, "--crop", "--checkpoint", tiny_ckpt, "--steps", 2,
                              "--out-dir", d, "--quiet", "--seed", 3], capsys)
        assert rc == 0, err
        assert "cropped" in err
    assert (a / "seq1_s0.pdb").read_text() == (b / "seq1_s0.pdb").read_text()     # seeded
    assert len(read_structure(a / "seq2_s0.pdb")["seq"]) == 64
    rc, _, err = run_cli(["--seq", SEQ, "--checkpoint", "tiny", "--steps", 2, "--out-dir", tmp_path / "c", "--quiet",
                          "--format", "cif"], capsys)
    assert rc == 0 and "untrained" in err and (tmp_path / "c" / "seq1_s0.cif").exists()


def test_subprocess_no_traceback(tmp_path, tiny_ckpt):
    "The real process: exit code and stderr as a user sees them (console script when installed, else python -c)."
    exe = shutil.which("minifold-sample")
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from minifold.structure_io import sample_main; sys.exit(sample_main())"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(cmd + ["--seq", "MKV1", "--checkpoint", str(tiny_ckpt)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "invalid character" in p.stderr
    p = subprocess.run(cmd + ["--seq", SEQ, "--checkpoint", str(tmp_path / "x.pt")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "checkpoint not found" in p.stderr
    p = subprocess.run(cmd + ["--seq", SEQ, "--checkpoint", str(tiny_ckpt), "--steps", "2", "--quiet", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "seq1_s0.pdb").exists() and str(tmp_path / "seq1_s0.pdb") in p.stdout
