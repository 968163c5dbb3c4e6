"""The report site: published data, Quarto configuration, code references of the NaN page, and a full build
(papermill + nbconvert) checked in headless Chromium (no broken image/link/anchor, math typeset by the local MathJax)."""
import filecmp
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from minifold import report, site
from minifold.config import project_root

ROOT = project_root()
NBS = ROOT / "nbs"
SPEC_PUBLISHED = ROOT.parent / "shared" / "spec" / "published"


# ---------------------------------------------------------------- published (seed) data
def test_published_csvs_present_and_documented():
    pub = ROOT / "data" / "published"
    csvs = sorted(pub.glob("*.csv"))
    assert len(csvs) == 14, [c.name for c in csvs]
    readme = (pub / "README.md").read_text()
    assert "seed report" in readme
    for c in csvs:
        assert c.name in readme, f"{c.name} not described in data/published/README.md"


@pytest.mark.skipif(not SPEC_PUBLISHED.is_dir(), reason="shared/spec/published not next to the checkout")
def test_published_csvs_are_unchanged_copies():
    for c in sorted((ROOT / "data" / "published").glob("*.csv")):
        assert filecmp.cmp(c, SPEC_PUBLISHED / c.name, shallow=False), f"{c.name} differs from the seed transcription"


def test_published_tables_load_for_every_version():
    for v in ["v11", "v11b", "v12", "v12b", "v13", "v14", "stage1"]:
        df = report.load_published(v)
        assert len(df) and "epoch" in df and "val_total" in df, v
    assert report.load_published("v12b")["val_total"].tolist()[-2] == "2.413"


# ---------------------------------------------------------------- which runs are reported
def _fake_run(root, name, preset, stage1=False, unclamped=False):
    from minifold.config import get_preset
    d = root / name
    d.mkdir()
    pre = {"name": preset} if stage1 else get_preset(preset).to_dict()
    (d / "config.json").write_text(json.dumps({"preset": pre, **({"stage": "stage1"} if stage1 else {}),
                                               "hardware": {"device": "cpu", "cpu_count": 2}}))
    cols = {"epoch": [1, 2], "val_total": [3.0, 2.5], "val_fape": [0.95, 0.9], "status": ["NEW BEST", "NEW BEST"]}
    if unclamped: cols["val_fape_unclamped"] = [1.9, 1.7]
    import pandas as pd
    pd.DataFrame(cols).to_csv(d / "epochs.csv", index=False)
    return d


def test_list_runs_excludes_ci_smoke_runs(tmp_path):
    _fake_run(tmp_path, "tiny", "tiny")                          # notebook tests / README main job
    _fake_run(tmp_path, "tiny_resume", "small")                  # a folder named tiny*
    _fake_run(tmp_path, "encoder_tiny", "tiny", stage1=True)     # Stage-1 notebook test
    _fake_run(tmp_path, "mytest", "tiny")                        # any name, tiny preset
    _fake_run(tmp_path, "small", "small")
    _fake_run(tmp_path, "encoder_cpu", "cpu", stage1=True)
    assert [r["name"] for r in report.list_runs(tmp_path)] == ["encoder_cpu", "small"]
    every = report.list_runs(tmp_path, include_smoke=True)
    assert [r["name"] for r in every if r["smoke"]] == ["encoder_tiny", "mytest", "tiny", "tiny_resume"]
    assert [r["name"] for r in report.runs_for("v14", runs_dir=tmp_path)] == ["small"]
    s = report.summary_table(runs_dir=tmp_path)
    assert s.loc["v14", ("reproduced (this repo)", "run")] == "small" and "tiny" not in s.to_string()


def test_fape_column_is_unclamped_when_logged(tmp_path):
    _fake_run(tmp_path, "old", "small")
    _fake_run(tmp_path, "new", "small", unclamped=True)
    t = report.version_tables("v14", runs_dir=tmp_path)
    new, old = (t[t["Source"].str.startswith(f"ours: {n} ")].iloc[-1] for n in ("new", "old"))   # epoch 2 of each
    assert new["FAPE"] == "1.700" and new["FAPE (10 Å clamp)"] == "0.900"       # seed-comparable + our clamped loss
    assert old["FAPE"] == "0.900†" and old["FAPE (10 Å clamp)"] == ""           # older log: clamped, marked
    assert set(t.attrs["notes"]) == set(report.FAPE_NOTES.values())
    assert "<caption>" in report.show(t).to_html()


# ---------------------------------------------------------------- Quarto configuration
def _yaml(path):
    return yaml.safe_load(Path(path).read_text())


def _flatten(contents):
    out = []
    for it in contents:
        if isinstance(it, dict): out += _flatten(it.get("contents", []))
        else: out.append(it)
    return out


def test_quarto_configs_are_valid_yaml_and_point_to_existing_pages():
    nb_q = _yaml(NBS / "_quarto.yml")
    assert nb_q["project"]["type"] == "website" and "html" in nb_q["format"]
    for m in nb_q["metadata-files"]:
        assert (NBS / m).exists(), f"nbs/_quarto.yml names missing metadata file {m}"
    css = nb_q["format"]["html"].get("css")
    assert css is None or (NBS / css).exists()
    top = _yaml(ROOT / "_quarto.yml")
    assert top["project"]["type"] == "website" and top["project"]["output-dir"] == "_docs"
    assert (ROOT / top["format"]["html"]["css"]).exists()
    for rel in top["project"]["render"] + _flatten(top["website"]["sidebar"]["contents"]):
        assert (ROOT / rel).exists(), f"_quarto.yml lists missing page {rel}"
    side = _flatten(_yaml(NBS / "sidebar.yml")["website"]["sidebar"]["contents"])
    for rel in side:
        assert (NBS / rel).exists(), f"nbs/sidebar.yml lists missing page {rel}"
    for fn, _ in site.REPORT_PAGES:                      # every report page is reachable in both sites
        assert fn in side and f"nbs/{fn}" in top["project"]["render"], f"{fn} missing: run `python -m minifold.site quarto`"
    assert _yaml(NBS / "nbdev.yml")["project"]["output-dir"] == "_docs"


def test_report_notebooks_take_runs_dir_parameter():
    import nbformat
    for p in site.report_notebooks():
        nb = nbformat.read(p, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "runs_dir =" in "".join(tagged[0].source), \
            f"{p.name}: needs one cell tagged 'parameters' assigning runs_dir (plain `papermill {p.name} ...` uses it)"
        assert site._prepare_params(nb), f"{p.name}: no `runs_dir = ...` parameters cell"
        assert not any("#| export" in "".join(c.source) for c in nb.cells), f"{p.name} must not export code"


# ---------------------------------------------------------------- the NaN page's code references
@pytest.mark.parametrize("ref", report.check_code_refs(), ids=lambda r: f"{r['fix']}-{r['symbol']}")
def test_nan_story_references_exist(ref):
    assert ref["defined"], f"{ref['symbol']} is not defined in {ref['module']} (update minifold.report.NAN_FIXES)"
    assert ref["notebook_exists"], f"nbs/{ref['notebook']} does not exist"
    assert ref["guarded_by"], f"no test in {ref['tests']} mentions {ref['symbol']}"


# ---------------------------------------------------------------- build + Chromium check
def _digests():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in site.report_notebooks()}


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    before = _digests()
    # the default: execute copies of the report notebooks (the committed ones are not touched)
    built = site.build_site(out=out, execute=True, executed_dir=out.parent / "executed", log=lambda *a: None)
    assert _digests() == before, "build_site changed notebooks in nbs/ (it must execute copies unless in_place=True)"
    return built


def test_committed_report_notebooks_have_no_outputs():
    import nbformat
    for p in site.report_notebooks():
        nb = nbformat.read(p, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{p.name}: cells {dirty} have outputs (report notebooks are committed without outputs; nbdev_clean)"


def test_cli_executes_copies_by_default(monkeypatch):
    seen = {}
    monkeypatch.setattr(site, "build_site", lambda *a, **kw: seen.update(kw) or ROOT / "site")
    assert site.main(["build"]) == 0 and seen["in_place"] is False and seen["include_smoke"] is False
    assert site.main(["build", "--in-place", "--include-smoke"]) == 0 and seen["in_place"] is True and seen["include_smoke"]


@pytest.mark.slow
def test_build_site_writes_every_page(built_site):
    pages = site.site_pages()
    for p in pages:
        assert (built_site / p["html"]).exists(), p["html"]
    assert (built_site / "mathjax" / "MathJax.js").exists()
    home = (built_site / "index.html").read_text()
    assert site.MATHJAX_URL in home and "cdnjs" not in home and "require.min.js" not in home
    for p in pages:                                       # every page links every other page (sidebar)
        assert f'href="{p["html"]}"' in home
    assert "Published (seed) vs reproduced" in home
    losses = (built_site / "report_losses.html").read_text()
    assert "$$" in losses and site.has_math(losses)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.mark.slow
def test_site_in_headless_chromium(built_site, capsys):
    if site.find_chromium() is None:
        msg = "no chromium binary (apt-get install -y chromium, or set CHROMIUM=/path/to/chrome)"
        if _in_ci():          # CI must not pass without having looked at the pages
            pytest.fail(f"CI is set but {msg}: the headless-Chromium check of the site cannot run")
        pytest.skip(f"{msg} — the Chromium check did not run")
    art = ROOT / "artifacts" / "site"
    problems = site.check_site(built_site, artifacts=art, log=lambda *a: None)
    assert not problems, "\n".join(problems)
    shots = [art / "screenshot_index.png", art / "screenshot_report_v13.png"]   # the home page and one version page
    for shot in shots:
        assert shot.stat().st_size > 10_000, shot.name
    with capsys.disabled():
        print("\nsite screenshots: " + ", ".join(str(s) for s in shots))
    dom = (art / "dom" / "report_losses.html").read_text()
    assert len(re.findall(r'class="MathJax_Display"', dom)) >= 8   # the display formulas were typeset


def test_check_dom_flags_problems(tmp_path):
    (tmp_path / "p.html").write_text("<p>$$x$$</p>")
    probs = site.check_dom("p.html", '<p>$$x$$</p><img src="gone.png"><a href="nope.html">x</a>', tmp_path)
    assert any("missing image" in p for p in probs) and any("broken link" in p for p in probs)
    assert any("math not typeset" in p for p in probs)
