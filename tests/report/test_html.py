"""The HTML report: every section, inline figures, nothing external, atomic write, provenance."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imharmony._version import __version__
from imharmony.diagnostics import diagnose
from imharmony.report.html import file_record, render_report

SECTIONS = ["verdict", "distributions", "pca", "fisher", "mixed", "confounding", "site-tests",
            "provenance"]


class Page(HTMLParser):
    """Tags, attributes, text and the id of the section each piece of text is in."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.section_order: list[str] = []
        self.text_by_section: dict[str, list[str]] = {}
        self._section = ""
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id") or ""
            self.section_order.append(self._section)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text_by_section.setdefault(self._section, []).append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.text_by_section.get(section, [])).split())

    def images(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "img"]


@pytest.fixture(scope="module")
def page(rendered) -> Page:
    return Page(rendered.html)


@pytest.fixture
def fast_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the figures by a tiny SVG, for tests of what surrounds them (faster)."""
    from imharmony.report import figures

    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    stub = figures.InlineFigure(uri="data:image/svg+xml;base64," + base64.b64encode(svg).decode(),
                                alt="stub", width_px=10)
    for name in ("site_distributions_figure", "pca_figure", "fisher_figure", "mixed_figure"):
        monkeypatch.setattr(figures, name, lambda *a, **k: stub)


def test_every_section_in_reading_order_verdict_first(page: Page) -> None:
    assert page.section_order == SECTIONS
    assert page.title == "Small cohort <test>"  # escaped in the file, read back as text


def test_verdict_panel_states_both_verdicts_with_thresholds(page: Page, rendered) -> None:
    d = rendered.diagnosis
    text = page.text("verdict")
    # the oracle harmonization: the generator's clean data
    assert d.verdicts == {"site effect": "removed", "biology": "kept"}
    assert "✓ REMOVED" in text and "✓ KEPT" in text
    cards = [a for t, a in page.tags if t == "div" and "card" in (a.get("class") or "")]
    assert [(c["class"], c["data-verdict"]) for c in cards] == [("card good", "removed"),
                                                                ("card good", "kept")]
    # the numbers and thresholds behind the verdicts are printed, not only the words
    assert "removed ≤ 5%" in text and "inflated below 0.5" in text
    ev = d.biology_evidence
    assert list(ev.index) == ["pooled Fisher ratio", "within-site Fisher ratio",
                              "mixed-model coefficient"] or "within-site" not in " ".join(ev.index)
    r = ev.loc["mixed-model coefficient"]
    # each measure: its numbers, the band it was compared with and what the comparison means
    assert (f"{r['before']:.3g}" in text or f"{r['before']:.3f}" in text) and \
        f"ratio {r['ratio']:.2f}: {r['reading']}" in text
    assert "compared with 0.9–1.1: below is erased, inside kept, above inflated" in text
    assert "compared with 0.8–1.25" in text
    for reason in d.reasons["site effect"] + d.reasons["biology"]:
        assert " ".join(reason.split()) in text
        assert "mixed.note" not in reason and "_" not in reason.replace("q_", "")  # no code


def test_figures_are_inline_svg_data_uris(page: Page, rendered) -> None:
    imgs = page.images()
    assert len(imgs) == 4  # distributions, PCA, Fisher, mixed model
    for img in imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/svg+xml;base64,")
        assert len(img["alt"] or "") > 40
        svg = base64.b64decode(src.split(",", 1)[1], validate=True)
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        # inside the SVG, links are only to its own definitions or to embedded rasters
        for el in root.iter():
            for key, value in el.attrib.items():
                if key.endswith("href"):
                    assert value.startswith(("#", "data:image/png;base64,")), (key, value[:40])
        assert b"<text" not in svg  # text drawn as paths: no font needed
    # each figure sits in its own section, in order
    html = rendered.html
    positions = [html.index(f'id="{s}"') for s in ("distributions", "pca", "fisher", "mixed")]
    figure_positions = [m.start() for m in re.finditer(r"<img ", html)]
    assert all(a < f for a, f in zip(positions, figure_positions, strict=True))


def test_no_external_resource_and_no_script(page: Page, rendered) -> None:
    html = rendered.html
    assert "http://" not in html and "https://" not in html
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
    for _, attrs in page.tags:
        for key in ("src", "href", "srcset", "poster", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (key, value[:60])
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert "@import" not in style and "url(" not in style and "@font-face" not in style


def test_confounding_table_matches_an_independent_crosstab(page: Page, rendered) -> None:
    t = rendered.table
    counts = pd.crosstab(t["site"], t["disease"])
    text = page.text("confounding")
    for site, row in counts.iterrows():
        cells = " ".join(str(int(v)) for v in row) + f" {int(row.sum())}"
        assert f"{site} {cells}" in text
    assert f"total {' '.join(str(int(v)) for v in counts.sum())} {len(t)}" in text
    # Cramér's V = sqrt(chi2 / (n (min(r, c) - 1))) from the counts, by hand
    obs = counts.to_numpy(dtype=float)
    expected = obs.sum(axis=1, keepdims=True) * obs.sum(axis=0, keepdims=True) / obs.sum()
    v = np.sqrt(((obs - expected) ** 2 / expected).sum() / (obs.sum() * (min(obs.shape) - 1)))
    assert f"{v:.3f}" in text
    assert "Cramér" in text and "SMD" in text


def test_site_and_mixed_tables(page: Page, rendered) -> None:
    d = rendered.diagnosis
    text = page.text("site-tests")
    assert "Kruskal-Wallis" in text and "Brown-Forsythe" in text and "guided PCA" in text
    top = d.site_before.table["epsilon2"].idxmax()
    assert f"{top} " in text
    mixed_text = page.text("mixed")
    for feature in d.mixed.index:
        assert f"{feature} " in mixed_text
    assert "shrinkage" in mixed_text and "0.9 to 1.1" in mixed_text


def test_provenance_has_version_hashes_parameters_and_versions(page: Page, rendered) -> None:
    text = page.text("provenance")
    assert f"imharmony {__version__}" in text
    for path in (rendered.before_csv, rendered.after_csv):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in text
        assert path.name in text and str(path.stat().st_size) in text
    assert "n_permutations 19" in text and "max_features 4" in text
    assert "random_state 0" in text and "covariates ['age']" in text
    assert "shrinkage_kept (0.9, 1.1)" in text and "fisher_erased_below 0.8" in text
    assert f"numpy {np.__version__}" in text and "Python 3." in text
    assert "command pytest fixture" in text
    assert re.search(r"created \(UTC\) \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", text)


def test_written_atomically_and_readable(rendered, tmp_path: Path, fast_figures,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    d = rendered.diagnosis
    target = tmp_path / "r.html"
    target.write_text("previous report")
    real_write_text = Path.write_text

    def half_then_fail(self: Path, data: str, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            render_report(d, target)
    assert target.read_text() == "previous report"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary left behind
    out = render_report(d, tmp_path / "new" / "r.html")
    assert out == tmp_path / "new" / "r.html"
    assert out.stat().st_mode & 0o777 == 0o644  # readable by others, unlike a mkstemp file
    assert out.read_text(encoding="utf-8").rstrip().endswith("</html>")


def test_without_biology_or_data_the_sections_say_so(rendered, tmp_path: Path) -> None:
    t, feats = rendered.table, rendered.features
    d = diagnose(t[feats], t[feats] * 1.0, batch=t["site"], n_permutations=0, random_state=0)
    page = Page(render_report(d, tmp_path / "nobio.html").read_text(encoding="utf-8"))
    assert page.section_order == SECTIONS
    assert "? NOT ASSESSED" in page.text("verdict")
    assert "Not assessed: no biology was given." in page.text("fisher")
    assert "Not assessed: no biology was given." in page.text("mixed")
    assert len(page.images()) == 2  # distributions and PCA only
    # "after" identical to "before": the site effect is still there
    assert "✗ NOT REMOVED" in page.text("verdict")

    bare = dataclasses.replace(rendered.diagnosis, data=None)
    page = Page(render_report(bare, tmp_path / "bare.html").read_text(encoding="utf-8"))
    assert "Not available" in page.text("distributions") and "Not available" in page.text("pca")
    assert len(page.images()) == 2  # Fisher and mixed model only


def test_awkward_feature_names_are_escaped_everywhere(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    site = np.repeat(["a", "b"], 15)
    age = rng.normal(50, 10, 30)  # continuous biology: colour bar instead of classes
    names = ["<script>alert(1)</script>", "$\\frac{x$", "plain & simple"]
    X = pd.DataFrame(rng.normal(size=(30, 3)) + 0.05 * age[:, None] + (site == "b")[:, None],
                     columns=names)
    d = diagnose(X, X - X.groupby(site).transform("mean"), batch=site,
                 biology=pd.Series(age, name="age"), n_permutations=0, max_features=2,
                 random_state=0)
    html = render_report(d, tmp_path / "r.html", title="a <b>bold</b> title").read_text()
    page = Page(html)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and page.title == "a <b>bold</b> title"
    assert "plain &amp; simple" in html
    assert len(page.images()) == 4


def test_file_record_and_inputs_given_in_several_forms(rendered, tmp_path: Path,
                                                      fast_figures) -> None:
    rec = file_record(rendered.before_csv, "before")
    assert rec["sha256"] == hashlib.sha256(rendered.before_csv.read_bytes()).hexdigest()
    assert rec["size"] == rendered.before_csv.stat().st_size and rec["role"] == "before"
    html = render_report(rendered.diagnosis, tmp_path / "r.html",
                         provenance={"inputs": [str(rendered.after_csv), "in-memory frame"]}
                         ).read_text()
    assert hashlib.sha256(rendered.after_csv.read_bytes()).hexdigest() in html
    assert "in-memory frame" in html
    from imharmony.errors import DataError

    with pytest.raises(DataError, match="not found"):
        file_record(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="inputs"):
        render_report(rendered.diagnosis, tmp_path / "x.html", provenance={"inputs": 3})


def test_one_feature_two_sites_and_text_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    site = np.repeat(["north", "south"], 20)
    dx = np.tile(["control", "patient"], 20)
    x = rng.normal(size=40) + (dx == "patient") + 2.0 * (site == "south")
    before = pd.DataFrame({"volume": x})
    after = before - pd.DataFrame({"volume": 2.0 * (site == "south")})
    d = diagnose(before, after, batch=site, biology=dx, n_permutations=0, random_state=0)
    page = Page(render_report(d, tmp_path / "one.html").read_text(encoding="utf-8"))
    assert page.section_order == SECTIONS
    assert len(page.images()) == 4
    text = page.text("confounding")
    assert "north 10 10 20" in text and "south 10 10 20" in text  # balanced by construction


def test_mixed_model_rows_with_a_signal_come_first_and_alone_are_drawn() -> None:
    from imharmony.diagnostics import Thresholds
    from imharmony.report import figures
    from imharmony.report.html import _mixed_in_order

    mixed = pd.DataFrame({
        "beta_raw": [0.01, 1.0, 0.02, 2.0], "se_raw": [0.5, 0.1, 0.5, 0.2],
        "beta_after": [0.0, 1.0, 0.0, 1.0], "se_after": [0.5, 0.1, 0.5, 0.2],
        "shrinkage": [0.0, 1.0, 0.0, 0.5], "se_ratio": [1.0, 1.0, 1.0, 1.0],
        "verdict": ["no signal", "kept", "no signal", "erased"],
    }, index=pd.Index(["a", "b", "c", "d"], name="feature"))
    assert list(_mixed_in_order(mixed).index) == ["b", "d", "a", "c"]
    fig = figures.mixed_figure(mixed, Thresholds())
    assert fig is not None and "2 of the 4 modelled" in fig.alt
    assert figures.mixed_figure(mixed.iloc[[0, 2]], Thresholds()) is None


def test_says_what_it_compares_and_lists_fits_that_did_not_converge(
        rendered, tmp_path: Path, fast_figures) -> None:
    page = Page(rendered.html)
    # the title is given here; the line under it names both files
    assert "before = before.csv, after = after.csv" in " ".join(rendered.html.split())
    mixed = rendered.diagnosis.mixed.copy()
    mixed.iloc[0, mixed.columns.get_loc("converged_raw")] = False
    mixed.iloc[0, mixed.columns.get_loc("note")] = "raw: the Hessian is not positive definite"
    mixed.iloc[0, mixed.columns.get_loc("verdict")] = "not converged"
    d = dataclasses.replace(rendered.diagnosis, mixed=mixed)
    out = render_report(d, tmp_path / "nc.html", provenance={
        "inputs": {"before": rendered.before_csv, "after": rendered.after_csv}})
    page = Page(out.read_text(encoding="utf-8"))
    assert page.title == "Harmonization diagnosis: before.csv vs after.csv"
    text = page.text("mixed")
    n_bad = int((~mixed["converged_raw"] | ~mixed["converged_after"]).sum())
    assert n_bad >= 1
    assert f"Fits that did not converge ({n_bad})" in text
    assert f"{mixed.index[0]} : raw: the Hessian is not positive definite" in text
    # without provenance the line still says what is compared
    bare = render_report(rendered.diagnosis, tmp_path / "bare.html").read_text(encoding="utf-8")
    assert "before = the data before harmonization, after = the data after harmonization" in bare


def test_box_plots_have_labelled_axes(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    from imharmony.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_embed", lambda fig, alt: drawn.append(fig))
    d = rendered.diagnosis
    feats = rendered.features[:2]
    scores = pd.DataFrame({"before": [0.5, 0.4], "after": [0.0, 0.1]}, index=feats)
    figures.site_distributions_figure(d.data, feats, scores)
    axes = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in axes] == ["site", "site"]
    assert [ax.get_ylabel() for ax in axes] == [f"{f} (feature units)" for f in feats]
