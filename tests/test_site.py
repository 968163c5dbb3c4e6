"""The report site: published data, Quarto configuration, code references of the NaN page, and a full build
(papermill + nbconvert) checked in headless Chromium (no broken image/link/anchor, math typeset by the local MathJax)."""
import filecmp
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
@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    # execute copies of the report notebooks (the committed ones are not touched by the tests)
    return site.build_site(out=out, execute=True, in_place=False, log=lambda *a: None)


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


@pytest.mark.slow
def test_site_in_headless_chromium(built_site):
    if site.find_chromium() is None:
        pytest.skip("no chromium binary (apt-get install -y chromium) — the Chromium check did not run")
    art = ROOT / "artifacts" / "site"
    problems = site.check_site(built_site, artifacts=art, log=lambda *a: None)
    assert not problems, "\n".join(problems)
    for name in ("screenshot_index.png", "screenshot_report_v13.png"):
        assert (art / name).stat().st_size > 10_000, name
    dom = (art / "dom" / "report_losses.html").read_text()
    assert len(re.findall(r'class="MathJax_Display"', dom)) >= 8   # the display formulas were typeset


def test_check_dom_flags_problems(tmp_path):
    (tmp_path / "p.html").write_text("<p>$$x$$</p>")
    probs = site.check_dom("p.html", '<p>$$x$$</p><img src="gone.png"><a href="nope.html">x</a>', tmp_path)
    assert any("missing image" in p for p in probs) and any("broken link" in p for p in probs)
    assert any("math not typeset" in p for p in probs)
