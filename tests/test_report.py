"""The run report (imageclef/report.py): galleries on data whose truth is known, ``ctfp report``
(one folder, several folders, an old run without galleries), and the page in a real browser
(Debian's chromium, headless, driven by selenium through chromedriver; network off).

``CTFP_REPORT_SCREENSHOT=docs/report.png pytest tests/test_report.py -k browser`` also writes the
browser's screenshot there (the README's picture)."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ctfp.imageclef.cli import main
from ctfp.imageclef.experiments import Method, run_method, run_similarity
from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset
from ctfp.imageclef.report import SECTIONS, load_runs, write_galleries, write_report
from ctfp.imageclef.runfile import SingleClassWarning
from ctfp.imageclef.scorers import Fitted
from ctfp.membership.index import GeneratedIndex

# One slice per patient: a used slice's planted near-copies are the only generated images of its
# anatomy. (With the demo's 4 slices per patient, the nearest generated image of a used slice is
# often the copy of a neighbouring slice of the same patient: evidence of the patient, not of
# the slice.)
SPEC = LeakyDataSpec.small(leak=0.6, seed=2, slices_per_patient=1)


def _run(data: Path, out: Path, name: str = "sim-pixel", **kwargs) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        warnings.simplefilter("error", UserWarning)  # a report that fails warns: make it fail
        return run_similarity(
            name,
            data / "development",
            out,
            test=data / "test",
            test_labels=data / "test_labels.csv",
            verbose=0,
            threads=1,
            **kwargs,
        )


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leaky") / "data"
    make_leaky_dataset(root, SPEC)
    return root


@pytest.fixture(scope="module")
def run_dir(leaky, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "sim-ssim"
    _run(leaky, out, name="sim-ssim")  # the closest generated image decides: its neighbours
    return out


def _gallery(out: Path) -> dict:
    (meta,) = sorted(out.glob("gallery_*.json"))
    return json.loads(meta.read_text())


def _sources(data: Path) -> dict[str, str]:
    with open(data / "leak_sources.csv", newline="") as f:
        return {r["generated"]: r["source"] for r in csv.DictReader(f)}


def _rel(path: str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


# -------------------------------------------------------------------------------------- galleries


def test_gallery_nearest_is_the_planted_near_copy(run_dir, leaky):
    g = _gallery(run_dir)
    assert g["split"] == "test" and g["measure"] == "ssim"
    assert g["neighbours_from"] == "the method's own index (ssim, 64x64)"
    sources = _sources(leaky)
    copies: dict[str, set[str]] = {}
    for gen, src in sources.items():
        if src and gen.startswith("development/"):  # the generated set the method indexed
            copies.setdefault(src, set()).add(gen)
    rows = g["rows"]
    assert [r["group"] for r in rows] == ["high"] * 4 + ["low"] * 2
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    checked = 0
    for r in rows:
        real = _rel(r["path"], leaky)
        nearest = _rel(r["neighbours"][0]["path"], leaky)
        if real in copies:  # a leaked slice: its nearest generated image is its planted copy
            assert nearest in copies[real], (real, nearest, copies[real])
            assert sources[nearest] == real
            checked += 1
        else:  # nothing copies it, so nothing shown can be a copy of it
            assert sources.get(nearest) != real
    assert checked >= 3  # the highest-scored test images are the leaked ones
    assert all(r["label"] == 1 for r in rows[:4]) and all(r["label"] == 0 for r in rows[4:])
    closeness = [[n["closeness"] for n in r["neighbours"]] for r in rows]
    assert all(c == sorted(c, reverse=True) for c in closeness)  # nearest first


def test_gallery_neighbours_are_the_methods_kneighbors(run_dir, leaky):
    """The method's index gave the gallery; a GeneratedIndex with the method's measure and size
    (what ``ctfp report`` rebuilds for old runs) finds the same neighbours and values."""
    g = _gallery(run_dir)
    generated = sorted((leaky / "development" / "generated").glob("*.png"))
    index = GeneratedIndex(measure="ssim", image_size=64, device="cpu").fit(generated)
    values, idx = index.kneighbors([r["path"] for r in g["rows"]], n_neighbors=3)
    for r, v, i in zip(g["rows"], values, idx, strict=True):
        assert [n["name"] for n in r["neighbours"]] == [generated[j].name for j in i]
        np.testing.assert_allclose([n["closeness"] for n in r["neighbours"]], v, atol=1e-3)


def test_exact_copy_gives_a_flat_difference_map(leaky, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(leaky, data)
    real = data / "test" / "real_unknown" / "real_unknown_0003.png"
    # test images are scored against the development split's generated images (the default)
    shutil.copy(real, data / "development" / "generated" / "generated_9999.png")
    out = tmp_path / "out"
    _run(data, out, name="sim-ssim")  # the closest image's SSIM: an exact copy scores 1
    row = next(r for r in _gallery(out)["rows"] if r["id"] == "real_unknown_0003")
    assert row["group"] == "high" and row["rank"] == 1  # an exact copy scores highest
    assert row["neighbours"][0]["name"] == "generated_9999.png"
    assert row["neighbours"][0]["closeness"] == pytest.approx(1.0, abs=1e-3)
    assert row["neighbours"][0]["shown"] == "SSIM 1.000"
    assert row["mean_abs_diff"] == 0.0


def test_scorer_without_neighbours_gets_pixel_gallery_and_training_curves(leaky, tmp_path):
    """Methods 1-4 have no neighbours of their own: the gallery uses pixel neighbours at 64x64
    and says so; the classifier's history (run_method records it) becomes training curves."""
    history = [
        {"epoch": e, "loss": 0.7 / e, "val_loss": 0.8 / e, "val_accuracy": 0.5 + e / 10,
         "val_roc_auc": 0.6 + e / 20, "seconds": 1.0, "images_per_s": 100.0}
        for e in (1, 2, 3)
    ]  # fmt: skip

    class Scorer:  # a classifier stand-in: scores by position, records a training history
        refits = False

        def config(self):
            return {}

        def fit(self, fold):  # what ClassifierScorer records from clf.history_
            return Fitted(lambda paths: np.arange(len(paths), dtype=float), {"history": history})

    scorer = Scorer()

    out = tmp_path / "m"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run_method(Method("x", "a classifier stand-in"), leaky / "development", out,
                   holdout=0.5, decision="threshold:3", scorer=scorer, verbose=0)  # fmt: skip
    g = _gallery(out)
    assert g["split"] == "development (held out)"
    assert g["neighbours_from"].startswith("pixel nearest neighbours at 64x64")
    assert (out / "training_development.png").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert "val_roc_auc" in page and "pixel nearest neighbours at 64x64" in page
    record = json.loads((out / "record.json").read_text())
    assert record["datasets"][0]["history"] == history
    assert len(record["datasets"][0]["holdout_scores"]) == 8


# ------------------------------------------------------------------------------- report, command


def _ids(page: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', page))


def test_report_page_is_self_contained(run_dir):
    page = (run_dir / "report.html").read_text()
    assert _ids(page) == set(SECTIONS)
    assert "<script" not in page.lower()
    sources = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "@page" in page and "A4" in page and "prefers-color-scheme: dark" in page
    assert re.search(r"badge ok\">valid", page)  # the run file, validated again


def test_ctfp_report_rebuilds_an_old_run(run_dir, tmp_path, capsys):
    """A run made before reports existed: no page, no galleries; ``ctfp report`` makes both
    from the record and the data folders, with the same neighbours."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    before = _gallery(old)
    for p in [old / "report.html", *old.glob("gallery_*")]:
        p.unlink()
    assert main(["report", str(old)]) == 0
    assert f"report: {old / 'report.html'}" in capsys.readouterr().out
    after = _gallery(old)
    assert after["rows"] == before["rows"]
    assert after["neighbours_from"].startswith("the method's measure and size (ssim, 64x64)")
    assert _ids((old / "report.html").read_text()) == set(SECTIONS)


def test_ctfp_report_compares_runs(run_dir, leaky, tmp_path):
    other = tmp_path / "ganleaks"
    _run(leaky, other, "base-ganleaks")
    assert main(["report", str(run_dir), str(other), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "report_compare.html").read_text()
    ids = _ids(page)
    assert "compare" in ids
    assert {f"run{n}-{s}" for n in (1, 2) for s in SECTIONS} <= ids
    assert (tmp_path / "cmp" / "report_compare_roc.png").stat().st_size > 0
    assert "SSIM to the mean of 10 closest" in page and "GAN-Leaks (baseline)" in page
    # two leak tests on one dataset: one Holm verdict leads the page
    assert page.index('id="leak-family"') < page.index('id="compare"')
    assert "One verdict for 2 tests" in page
    # default place: the first folder
    assert main(["report", str(run_dir), str(other)]) == 0
    assert (run_dir / "report_compare.html").is_file()


def test_ctfp_report_without_a_record_is_bad_usage(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no record.json here" in capsys.readouterr().err


def test_galleries_are_reused_until_asked(run_dir):
    (run,) = load_runs(run_dir)
    png = next(run_dir.glob("gallery_*.png"))
    stamp = png.stat().st_mtime_ns
    write_galleries(run)
    assert png.stat().st_mtime_ns == stamp
    write_report(run_dir, redo_galleries=True)
    assert png.stat().st_mtime_ns != stamp


# ------------------------------------------------------------------------------------ browser

# Debian's packages: chromium (/usr/bin/chromium) and chromium-driver (/usr/bin/chromedriver)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _missing(reason: str) -> None:
    """Skip, or fail where CI asks for the browser test (CTFP_REQUIRE_BROWSER=1)."""
    if os.environ.get("CTFP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CTFP_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            _missing(f"{path} not found: install Debian's {what} (apt-get install {what})")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: the network is off
        "--window-size=1280,1400",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    yield driver
    driver.quit()


def _contrast(rgb_fg: str, rgb_bg: str) -> float:
    def lum(css: str) -> float:
        r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(rgb_fg), lum(rgb_bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_report_in_a_browser(browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # start with an empty log
    browser.get((run_dir / "report.html").resolve().as_uri())
    assert browser.title.startswith("ctfp report")
    for sid in SECTIONS:
        assert browser.find_element(By.ID, sid).is_displayed(), sid
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 4  # ROC, histograms, confusion, gallery
    widths = browser.execute_script(
        "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt]);"
    )
    assert all(done and w > 0 for done, w, _ in widths), widths
    assert not browser.find_elements(By.TAG_NAME, "script")
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )
    assert all(r.startswith("data:") for r in resources), resources
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []

    # readable in both colour schemes
    def colours() -> tuple[str, str]:
        return tuple(  # type: ignore[return-value]
            browser.execute_script(
                "const s = getComputedStyle(document.body); return [s.color, s.backgroundColor];"
            )
        )

    seen = {}
    for scheme in ("light", "dark"):
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        fg, bg = colours()
        assert _contrast(fg, bg) >= 7, (scheme, fg, bg)
        seen[scheme] = bg
    assert seen["light"] != seen["dark"]
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "light"}]},
    )

    # prints on A4 (the page's own @page size)
    pdf = base64.b64decode(
        browser.execute_cdp_cmd("Page.printToPDF", {"preferCSSPageSize": True})["data"]
    )
    assert pdf.startswith(b"%PDF")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert boxes and all(
        abs(float(w) - 595.92) < 2 and abs(float(h) - 842.88) < 2 for w, h in boxes
    ), boxes[:3]

    shot = tmp_path / "report.png"
    browser.set_window_size(1280, 2000)
    browser.execute_script("window.scrollTo(0, 0);")
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    target = os.environ.get("CTFP_REPORT_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)


# the runs-compared table and the ROC of every run: fit the page, legend clear of the curves

LONG_FOLDERS = (
    "out_realistic_thousand_seed1_sim_ssim_to_the_mean_of_10_closest",
    "out_realistic_thousand_seed1_sim_ssim_density_ratio_k_real_30",
    "out_realistic_thousand_seed2_sim_ssim_query_transforms_flips",
    "out_realistic_thousand_seed3_sim_ssim_index_cache_reused",
)


def test_roc_legend_lies_outside_the_axes_and_inside_the_figure(tmp_path, monkeypatch):
    """The ROC of every run as matplotlib saves it: the legend (long names, a perfect curve)
    overlaps neither the axes nor their labels and lies inside the saved figure; a curve at
    AUC 1.0 is drawn inside the frame, not on it."""
    from ctfp.imageclef import plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)
    rng = np.random.default_rng(0)
    curves = {f"{name}, test": (y, y * 0.5 * i + rng.normal(size=100)) for i, name in
              enumerate(LONG_FOLDERS)}  # fmt: skip
    curves["a perfect method, test"] = (y, y.astype(float))
    path = plots.plot_roc(curves, tmp_path / "roc.png", title="ROC of every run")
    (fig,) = figures
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # pyplot let go of the saved figure: lay it out again
    canvas.draw()
    r = canvas.get_renderer()
    (ax,) = fig.axes
    legends = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
    (legend,) = legends
    box = legend.get_window_extent(r)
    assert not box.overlaps(ax.get_window_extent(r)), "the legend covers the curves"
    for label in (ax.xaxis.label, ax.yaxis.label):
        assert not box.overlaps(label.get_window_extent(r)), label.get_text()
    assert not box.overlaps(ax.get_tightbbox(r)), "the legend covers the tick or axis labels"
    whole = fig.bbox  # what savefig writes (the PNG's pixels: checked below)
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0, "legend cut off"
    png = plots._pyplot().imread(path)  # the whole figure was saved, nothing cropped
    w, h = fig.get_size_inches() * 120
    assert abs(png.shape[1] - w) < 1 and abs(png.shape[0] - h) < 1, (png.shape, w, h)
    lo, hi = ax.get_xlim()
    assert lo < 0 and hi > 1 and ax.get_ylim()[0] < 0 and ax.get_ylim()[1] > 1


def test_compare_page_fits_a_1280px_window(browser, run_dir, tmp_path):
    """report_compare.html of four runs with long folder names: at 1280 px the runs-compared
    table needs no horizontal scroll bar (its last column, the confusion matrix, is on
    screen), and the ROC figure fits its column."""
    folders = []
    for name in LONG_FOLDERS:
        shutil.copytree(run_dir, tmp_path / name)
        folders.append(str(tmp_path / name))
    assert main(["report", *folders, "--out", str(tmp_path / "cmp")]) == 0
    browser.set_window_size(1280, 1400)
    browser.get((tmp_path / "cmp" / "report_compare.html").resolve().as_uri())
    geo = browser.execute_script(
        """
        const sec = document.getElementById('compare');
        const table = sec.querySelector('table');
        const wrap = table.parentElement;
        const heads = Array.from(table.querySelectorAll('thead th'), h => h.textContent);
        const last = table.querySelector('tbody tr').lastElementChild.getBoundingClientRect();
        const img = sec.querySelector('img').getBoundingClientRect();
        sec.scrollIntoView();
        return {scroll: wrap.scrollWidth, client: wrap.clientWidth, heads: heads,
                lastRight: last.right, view: document.documentElement.clientWidth,
                pageScroll: document.documentElement.scrollWidth,
                imgRight: img.right, secRight: sec.getBoundingClientRect().right};
        """
    )
    assert geo["heads"][-1] == "confusion"
    assert geo["scroll"] <= geo["client"], geo  # no horizontal scroll bar in the table
    assert geo["lastRight"] <= geo["view"], geo  # the confusion column is on screen
    assert geo["pageScroll"] <= geo["view"], geo
    assert geo["imgRight"] <= geo["secRight"] + 1, geo
    shot = tmp_path / "compare.png"
    assert browser.save_screenshot(str(shot))
    target = os.environ.get("CTFP_COMPARE_SCREENSHOT")
    if target:
        shutil.copy(shot, target)


# the attribution report (ctfp attribute, subtask 2) in the browser


ATTRIBUTION_SECTIONS = ("summary", "scores", "confusion", "fingerprints", "closest")


def test_attribution_report_in_a_browser(browser, tmp_path):
    """The new sections of ``ctfp attribute``'s page show in the browser: the confusion matrix,
    each source's mean residual and mean spectrum, the closest real images in the chosen
    subset and the runner-up; every picture decodes; nothing is fetched."""
    from selenium.webdriver.common.by import By
    from test_attribution_layout import _layout

    from ctfp.imageclef.cli import main

    dev, test, _ = _layout(tmp_path, "2025")
    out = tmp_path / "attr"
    assert main(["attribute", "--data", str(dev), "--test", str(test), "--out", str(out)]) == 0
    browser.get_log("browser")
    browser.get((out / "report.html").resolve().as_uri())
    assert browser.title == "ctfp report: attribution"
    for sid in ATTRIBUTION_SECTIONS:
        assert browser.find_element(By.ID, sid).is_displayed(), sid
    images = browser.execute_script(
        "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt]);"
    )
    alts = [a for _, _, a in images]
    assert alts == [
        "confusion matrix",
        "mean noise residual of each source",
        "mean spectrum of each source",
        "test images beside their closest real images",
    ]
    assert all(done and w > 0 for done, w, _ in images), images
    closest = browser.find_element(By.ID, "closest")
    rows = closest.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 6
    chosen = rows[0].find_elements(By.TAG_NAME, "td")[1].text
    assert chosen.startswith(("s1", "s2", "s3")) and "RMSE" in chosen
    scores = browser.find_element(By.ID, "scores").text
    assert "accuracy" in scores and "s3" in scores
    assert not browser.find_elements(By.TAG_NAME, "script")
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )
    assert all(r.startswith("data:") for r in resources), resources
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_leaktest_report_in_a_browser(browser, leaky, tmp_path):
    """``ctfp leaktest``'s page: the family's verdict with raw and adjusted p-values, the null
    distributions as a picture that decodes, nothing fetched."""
    from selenium.webdriver.common.by import By

    out = tmp_path / "lt"
    args = ["--methods", "sim-pixel,base-ganleaks", "--permutations", "199", "--n-jobs", "1"]
    assert main(["leaktest", str(leaky / "development"), "--out", str(out), *args]) == 0
    browser.get_log("browser")
    browser.get((out / "report.html").resolve().as_uri())
    assert browser.title == "ctfp report: leak test"
    section = browser.find_element(By.ID, "dataset1")
    assert section.is_displayed() and "One verdict for 2 tests" in section.text
    rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [
        "sim-pixel",
        "base-ganleaks",
    ]
    images = browser.execute_script(
        "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt]);"
    )
    assert [a for _, _, a in images] == ["null distributions of the leak tests"]
    assert all(done and w > 0 for done, w, _ in images), images
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )
    assert all(r.startswith("data:") for r in resources), resources
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
