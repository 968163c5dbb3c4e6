"Shipped weights: export_weights / load_weights round trip, `minifold-sample` without --checkpoint, clear errors."
import json
import os
from pathlib import Path

import pytest
import torch

import minifold.structure_io as sio
from minifold.structure_io import (DEFAULT_WEIGHTS, WEIGHTS_FORMAT, export_weights, load_model, load_weights,
                                   read_structure, sample_main, sequence_batch, set_weights_sampler)
from minifold.trainer import CKPT_FORMAT, EMA, CheckpointError, save_checkpoint

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"      # 33 residues of a real protein


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    "A fake run folder: runs/<name>/config.json + ckpt/best.pt in the trainer's format (tiny preset, EMA ≠ raw weights)."
    from minifold.config import get_preset
    from minifold.model import build_model
    preset = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(preset)
    ema = EMA(model, preset.ema_decay)
    with torch.no_grad():
        for v in ema.shadow.values(): v.mul_(0.5)
    d = tmp_path_factory.mktemp("runs") / "tiny_fake"
    save_checkpoint(d / "ckpt" / "best.pt", {"format": CKPT_FORMAT, "preset": preset.to_dict(), "model": model.state_dict(),
                                             "ema": ema.state_dict(), "epoch": 7, "global_step": 42})
    (d / "config.json").write_text(json.dumps({"preset": preset.to_dict(), "git": {"commit": "abc123", "dirty": False}}))
    return d


@pytest.fixture(scope="module")
def weights(run_dir, tmp_path_factory):
    dest = tmp_path_factory.mktemp("weights") / "fold.pt"
    prov = export_weights(run_dir / "ckpt" / "best.pt", dest)
    return dest, prov


def test_default_path():
    assert DEFAULT_WEIGHTS.parts[-3:] == ("data", "weights", "fold.pt")
    assert DEFAULT_WEIGHTS.parent == Path(__file__).resolve().parents[1] / "data" / "weights"


def test_export_format_and_provenance(weights, run_dir):
    dest, prov = weights
    raw = torch.load(dest, map_location="cpu", weights_only=True)
    assert set(raw) == {"format", "preset", "state_dict", "provenance"} and raw["format"] == WEIGHTS_FORMAT
    assert raw["preset"]["name"] == "tiny" and raw["provenance"] == prov
    import hashlib
    assert prov == {**prov, "run": "tiny_fake", "source": "best.pt", "epoch": 7, "global_step": 42, "weights": "ema",
                    "dtype": "float32", "git_commit": "abc123", "git_dirty": False,
                    "source_sha256": hashlib.sha256((run_dir / "ckpt" / "best.pt").read_bytes()).hexdigest()}
    assert dest.stat().st_size < (run_dir / "ckpt" / "best.pt").stat().st_size      # no raw weights, no optimizer


def test_export_sampler_defaults(run_dir, tmp_path):
    "Sampler settings chosen on validation travel in the file's preset; only ddim_* fields may be set."
    dest = tmp_path / "w.pt"
    prov = export_weights(run_dir / "ckpt" / "best.pt", dest, sampler={"ddim_self_cond": False, "ddim_t_stop": 300})
    model, preset, _ = load_model(dest)
    assert (preset.ddim_self_cond, preset.ddim_t_stop) == (False, 300) and prov["sampler"]["ddim_t_stop"] == 300
    with pytest.raises(ValueError, match="ddim_"):
        export_weights(run_dir / "ckpt" / "best.pt", tmp_path / "x.pt", sampler={"lr": 1.0})


def test_cli_sampler_defaults_from_weights(run_dir, tmp_path, capsys):
    "`minifold-sample` takes η, w, self-conditioning, t_stop and idealize from the file's preset unless a flag overrides them."
    import csv
    dest = tmp_path / "w.pt"
    export_weights(run_dir / "ckpt" / "best.pt", dest, sampler={"ddim_eta": 0.5, "ddim_guidance": 1.5,
                                                                "ddim_self_cond": False, "ddim_t_stop": 300, "ddim_idealize": True})
    ref = tmp_path / "ref.pdb"
    assert sample_main(["--seq", SEQ, "--checkpoint", str(dest), "--steps", "3", "--out", str(ref), "--quiet"]) == 0
    for flags, want in (([], ("0.5", "1.5", "False", "300", "True")),
                        (["--eta", "0", "--guidance", "1", "--self-cond", "--t-stop", "0", "--no-idealize"], ("0.0", "1.0", "True", "0", "False")),
                        (["--rg-rescale"], ("0.5", "1.5", "False", "300", "False"))):      # Rg rescaling turns idealization off
        out = tmp_path / f"o{len(flags)}"
        assert sample_main(["--seq", SEQ, "--checkpoint", str(dest), "--steps", "3", "--out-dir", str(out),
                            "--reference", str(ref), "--quiet", *flags]) == 0
        row = next(csv.DictReader(open(out / "metrics.csv")))
        assert (row["eta"], row["guidance"], row["self_cond"], row["t_stop"], row["idealize"]) == want
    capsys.readouterr()
    assert sample_main(["--seq", SEQ, "--checkpoint", str(dest), "--steps", "3", "--out-dir", str(tmp_path / "x"),
                        "--rg-rescale", "--idealize"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_set_weights_sampler(weights, tmp_path):
    "A sampler chosen after the export is written into a weights file without its checkpoint; the weights are untouched."
    src, _ = weights
    dest = tmp_path / "w2.pt"
    prov = set_weights_sampler(src, {"ddim_idealize": True, "ddim_eta": 0.5}, dest=dest)
    a, b = torch.load(src, weights_only=True), torch.load(dest, weights_only=True)
    assert b["preset"]["ddim_idealize"] is True and b["preset"]["ddim_eta"] == 0.5 and a["preset"]["ddim_idealize"] is False
    assert {k: v for k, v in b["preset"].items() if not k.startswith("ddim_")} == {k: v for k, v in a["preset"].items() if not k.startswith("ddim_")}
    assert all(torch.equal(v, a["state_dict"][k]) for k, v in b["state_dict"].items())
    assert prov["sampler"] == {"ddim_idealize": True, "ddim_eta": 0.5} and b["provenance"] == prov
    assert prov["source_sha256"] == a["provenance"]["source_sha256"]
    with pytest.raises(ValueError, match="ddim_"): set_weights_sampler(src, {"lr": 1.0}, dest=tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="does not exist"): set_weights_sampler(tmp_path / "nope.pt", {"ddim_eta": 0.0})


def test_shipped_sampler_matches_preset():
    "The shipped file's preset is the `fold` row of the preset table (sampler defaults included)."
    from minifold.config import get_preset
    _, preset, _ = load_model(DEFAULT_WEIGHTS)
    assert preset.to_dict() == get_preset("fold").to_dict()


def test_load_weights_equals_checkpoint_ema(weights, run_dir):
    dest, prov = weights
    m = load_weights(dest)
    ref, _, info = load_model(run_dir)                     # the run folder, as --checkpoint accepts it today
    assert info["weights"] == "ema" and not m.training and m.provenance == prov
    sd = ref.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items())


def test_fp16_storage_close(run_dir, tmp_path):
    from minifold.sampling import ddim_sample
    export_weights(run_dir, tmp_path / "w16.pt", dtype="float16")
    raw = torch.load(tmp_path / "w16.pt", weights_only=True)
    assert raw["provenance"]["dtype"] == "float16"
    assert any(v.dtype == torch.float16 for v in raw["state_dict"].values())
    m16, m32 = load_weights(tmp_path / "w16.pt"), load_model(run_dir)[0]
    b = sequence_batch([SEQ])
    x = [ddim_sample(m, b, steps=5, generator=torch.Generator().manual_seed(0), progress=False)["bb"] for m in (m32, m16)]
    assert (x[0] - x[1]).norm(dim=-1).max().item() < 1e-2          # Å; fp32 storage (the default) is exact
    with pytest.raises(ValueError, match="dtype"): export_weights(run_dir, tmp_path / "x.pt", dtype="bfloat16")


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("minifold-sample: error:") and "Traceback" not in err, err
    return lines[0]


def test_sample_with_exported_checkpoint(weights, tmp_path, capsys):
    dest, _ = weights
    rc = sample_main(["--seq", SEQ, "--checkpoint", str(dest), "--steps", "3", "--n-samples", "2",
                      "--out-dir", str(tmp_path), "--quiet"])
    assert rc == 0
    r = read_structure(tmp_path / "seq1_s1.pdb")
    assert r["seq"] == SEQ and torch.isfinite(torch.as_tensor(r["bb"])).all()


def test_default_weights_present(weights, tmp_path, monkeypatch, capsys):
    dest, _ = weights
    monkeypatch.setattr(sio, "DEFAULT_WEIGHTS", dest)
    assert sample_main(["--seq", SEQ, "--steps", "2", "--out", str(tmp_path / "x.pdb"), "--quiet"]) == 0
    assert read_structure(tmp_path / "x.pdb")["seq"] == SEQ
    fa = tmp_path / "in.fa"; fa.write_text(f">a\n{SEQ}\n>b\n{SEQ[:20]}\n")
    assert sample_main(["--fasta", str(fa), "--steps", "2", "--out-dir", str(tmp_path / "f"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "f").glob("*.pdb")) == ["a_s0.pdb", "b_s0.pdb"]
    assert load_weights(device="cpu").provenance["run"] == "tiny_fake"         # load_weights() defaults to it too


def test_default_weights_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sio, "DEFAULT_WEIGHTS", tmp_path / "data" / "weights" / "fold.pt")
    for args in (["--seq", SEQ], ["--seq", SEQ, "--out", str(tmp_path / "x.pdb")]):
        rc = sample_main(args)
        line = _one_error_line(capsys)
        assert rc != 0 and "shipped weights" in line and str(tmp_path / "data" / "weights" / "fold.pt") in line
        assert "--checkpoint" in line
    assert not (tmp_path / "x.pdb").exists()
    with pytest.raises(CheckpointError, match="does not exist"): load_weights()
    # bad input is still reported first, and as bad input (exit 2), whether or not weights are there
    assert sample_main(["--seq", "MKV1LAG"]) == 2 and "invalid character" in _one_error_line(capsys)


def test_bad_weights_files(weights, run_dir, tmp_path, capsys):
    dest, _ = weights
    bad = tmp_path / "corrupt.pt"; bad.write_bytes(dest.read_bytes()[: 3000])        # truncated
    rnd = tmp_path / "random.pt"; rnd.write_bytes(os.urandom(4000))
    for p in (bad, rnd):
        with pytest.raises(CheckpointError, match="corrupt"): load_weights(p)
        assert sample_main(["--seq", SEQ, "--checkpoint", str(p)]) == 1
        assert "not a readable PyTorch checkpoint" in _one_error_line(capsys)
    with pytest.raises(CheckpointError, match="trainer checkpoint"): load_weights(run_dir / "ckpt" / "best.pt")
    wrong = tmp_path / "wrong.pt"; torch.save({"format": "something/else", "x": torch.zeros(1)}, wrong)
    with pytest.raises(CheckpointError, match="not a Mini-Fold weights file"): load_weights(wrong)
    # right format, weights of another preset: one line through the CLI as well
    raw = torch.load(dest, weights_only=True)
    k0 = next(iter(raw["state_dict"])); raw["state_dict"]["extra.weight"] = raw["state_dict"].pop(k0)
    mism = tmp_path / "mismatch.pt"; torch.save(raw, mism)
    with pytest.raises(CheckpointError, match="does not match preset tiny"): load_weights(mism)
    assert sample_main(["--seq", SEQ, "--checkpoint", str(mism)]) == 1
    assert "does not match preset tiny" in _one_error_line(capsys)
    with pytest.raises(CheckpointError, match="already an exported weights file"): export_weights(dest, tmp_path / "y.pt")
    with pytest.raises(CheckpointError): export_weights(tmp_path / "nope", tmp_path / "y.pt")


def test_out_file_errors(weights, tmp_path, capsys):
    dest, _ = weights
    common = ["--checkpoint", str(dest), "--quiet"]
    for args, needle in [(["--seq", SEQ, "--seq", SEQ, "--out", str(tmp_path / "x.pdb")], "one sequence and one sample"),
                         (["--seq", SEQ, "--n-samples", "2", "--out", str(tmp_path / "x.pdb")], "one sequence and one sample"),
                         (["--seq", SEQ, "--out", str(tmp_path / "x.xyz")], "unknown structure format"),
                         (["--seq", SEQ, "--out", str(tmp_path / "x.pdb"), "--out-dir", str(tmp_path)], "not both")]:
        assert sample_main(common + args) == 2
        assert needle in _one_error_line(capsys)
    assert not list(tmp_path.glob("x.*"))
