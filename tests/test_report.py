"""``mnistkit report``: self-contained HTML for one run or a comparison, checked as text and in Chromium."""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import require_or_skip, run_cli

from mnistkit.errors import ConfigError
from mnistkit.report import load_run, write_report
from mnistkit.training import fit

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
DIGITS = [str(i) for i in range(10)]
#: Viewport widths for screenshots: a laptop and an iPhone-sized phone.
DESKTOP, PHONE = 1280, 390


class _Tables(HTMLParser):
    """The text of every cell of every ``<table id=...>`` in a page: ``{id: [[cell, ...] per row]}``."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._rows: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._rows = self.tables.setdefault(dict(attrs).get("id") or "", [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._rows is not None:
            self._rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_dataset) -> tuple[Path, Path]:
    """Two real ``fit`` runs on the synthetic digits, made once per module: a logreg with a validation
    split (its weights plot) and a one-epoch MLP that still makes mistakes (uneven per-class scores)."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(dataset=str(synthetic_dataset), batch_size=32, log_every=5, echo=False, device="cpu")
    fit(out=str(root / "logreg-2ep"), model="logreg", solver="minibatch", epochs=2, val_size=0.2, **common)
    fit(out=str(root / "mlp-1ep"), model="mlp", model_options={"hidden": [16]}, epochs=1, **common)
    return root / "logreg-2ep", root / "mlp-1ep"


# --------------------------------------------------------------------------- HTML as text


def test_single_run_report_is_self_contained(runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    code, stdout, err = run_cli(["report", runs[0], "--out", out], capsys)
    assert code == 0, err
    assert stdout.strip() == f"wrote report: {out}"
    page = out.read_text()
    assert '<meta name="viewport"' in page and "<script" not in page
    assert "http://" not in page and "https://" not in page
    plots = {p.name for p in (runs[0] / "plots").iterdir()}
    assert plots >= {"curves.png", "confusion.png", "weights.png"}  # weights: a logreg
    assert page.count('src="data:image/png;base64,') == len(plots)
    accuracy = json.loads((runs[0] / "eval.json").read_text())["accuracy"]
    assert f"Accuracy of the model on the 200 test images: {accuracy:.2f} %" in page
    assert "Epoch [2/2], Step [15/15]" in page  # the log's last step line (480 training images / 32)


def test_report_tables_are_the_runs_eval_json_and_metrics(runs):
    """The results, per-class and per-epoch tables say what training wrote: eval.json (percentages,
    consistent with its confusion matrix) and metrics.jsonl."""
    for run in runs:
        ev = json.loads((run / "eval.json").read_text())
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        found = tables(write_report([run], run.parent / f"{run.name}.html").read_text())
        results = {row[0]: row[1] for row in found["metrics"][1:]}
        assert number(results["test accuracy (%)"]) == pytest.approx(ev["accuracy"], abs=0.01)
        assert number(results["test loss"]) == pytest.approx(ev["loss"], rel=1e-3)
        assert results["test samples"] == str(ev["n"]) == "200" and results["epochs run"] == str(len(rows))
        assert number(results["final train loss"]) == pytest.approx(rows[-1]["train_loss"], rel=1e-3)

        cm = np.array(ev["confusion"])
        assert cm.sum() == 200 and 100 * np.trace(cm) / 200 == pytest.approx(ev["accuracy"], abs=0.01)
        per_class = found["per-class"]
        assert per_class[0] == ["class", "precision %", "recall %", "F1 %", "support"]
        assert [row[0] for row in per_class[1:]] == DIGITS
        for c, (row, saved) in enumerate(zip(per_class[1:], ev["per_class"], strict=True)):
            recall = 100 * cm[c, c] / cm[c].sum()
            assert number(row[2]) == pytest.approx(recall, abs=0.01) == saved["recall"]
            if cm[:, c].sum():
                assert number(row[1]) == pytest.approx(100 * cm[c, c] / cm[:, c].sum(), abs=0.01)
            assert number(row[4]) == cm[c].sum() == saved["support"]

        epochs = found["epochs"]
        header = epochs[0]
        assert len(epochs) == 1 + len(rows) and header[:3] == ["epoch", "train_loss", "train_accuracy"]
        for cells, row in zip(epochs[1:], rows, strict=True):
            assert number(cells[header.index("train_loss")]) == pytest.approx(row["train_loss"], rel=1e-3)
    uneven = json.loads((runs[1] / "eval.json").read_text())["per_class"]
    assert len({c["recall"] for c in uneven}) > 1, "the MLP run should make mistakes for this test to bite"


def test_default_out_is_inside_the_run(runs):
    path = write_report([runs[1]])
    assert path == runs[1] / "report.html"
    page = path.read_text()
    accuracy = json.loads((runs[1] / "eval.json").read_text())["accuracy"]
    assert runs[1].name in page and f"Accuracy of the model on the 200 test images: {accuracy:.2f} %" in page
    found = tables(page)
    assert number({row[0]: row[1] for row in found["metrics"][1:]}["test accuracy (%)"]) == pytest.approx(accuracy)
    assert [row[0] for row in found["per-class"][1:]] == DIGITS


def test_text_is_escaped(runs, tmp_path):
    run = Path(shutil.copytree(runs[1], tmp_path / "evil"))
    shutil.rmtree(run / "plots")
    config = json.loads((run / "config.json").read_text())
    config["note"] = "<script>alert(1)</script>"
    (run / "config.json").write_text(json.dumps(config))
    ev = json.loads((run / "eval.json").read_text())
    ev["per_class"][0]["class"] = "<b>zero</b>"
    (run / "eval.json").write_text(json.dumps(ev))
    page = write_report([run]).read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>zero" not in page and "&lt;b&gt;zero&lt;/b&gt;" in page
    assert "No plots in this run" in page  # a run without plots still reports


def test_missing_required_files_named_in_one_line(tmp_path, capsys):
    run = tmp_path / "half"
    run.mkdir()
    (run / "log.txt").write_text("Epoch [1/1]\n")
    with pytest.raises(ConfigError, match=r"half is not a complete run directory: missing config.json, metrics.jsonl"):
        load_run(run)
    code, _, err = run_cli(["report", run], capsys)
    assert code == 2 and err.count("\n") == 1 and "missing config.json, metrics.jsonl" in err
    code, _, err = run_cli(["report", tmp_path / "nope"], capsys)
    assert code == 2 and "run directory" in err and "does not exist" in err


def test_optional_files_may_be_missing(runs, tmp_path):
    run = Path(shutil.copytree(runs[0], tmp_path / "partial"))
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for name in ("eval.json", "summary.json", "log.txt", "metrics.jsonl"):
        (run / name).unlink()  # metrics then come from metrics.csv
    record = load_run(run)
    assert record.missing == ["summary.json", "eval.json", "log.txt"]
    assert record.metrics[-1]["val_accuracy"] == pytest.approx(last["val_accuracy"])
    assert record.metrics[-1]["epoch"] == 2
    page = write_report([run]).read_text()
    assert "Not found in" in page and "No per-class metrics" in page and "No log.txt" in page


def test_comparison_defaults_to_cwd(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["report", *runs], capsys)
    assert code == 0, err
    assert stdout.strip() == f"wrote comparison of 2 runs: {tmp_path / 'report.html'}"
    page = (tmp_path / "report.html").read_text()
    assert "logreg-2ep" in page and "mlp-1ep" in page
    assert page.count('src="data:image/png;base64,') == 2  # overlaid accuracy and loss curves
    accuracy = {run.name: json.loads((run / "summary.json").read_text())["test_accuracy"] for run in runs}
    assert accuracy["logreg-2ep"] != accuracy["mlp-1ep"]
    assert f'<tr class="best"><td>{max(accuracy, key=accuracy.get)}</td>' in page  # the higher test accuracy
    assert 'id="config-diff"' in page and "<th>model</th>" in page


# --------------------------------------------------------------------------- in a browser


def _chromium_path() -> str | None:
    for candidate in (
        os.environ.get("MNISTKIT_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (browsers cannot be downloaded here)."""
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        require_or_skip("playwright is not installed")
    path = _chromium_path()
    if path is None:
        require_or_skip("chromium not found (set MNISTKIT_CHROMIUM to its path)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=path,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def check_in_browser(browser, html_path: Path, shot_name: str) -> None:
    """Render at desktop and phone width: metrics table present, all images loaded, no sideways page scroll."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (DESKTOP, PHONE):
        page = browser.new_page(viewport={"width": width, "height": 900})
        try:
            page.goto(html_path.as_uri(), wait_until="load")
            assert page.locator("table#metrics").count() == 1
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert images and all(done and w > 0 for done, w in images), images
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"page is {overflow}px wider than a {width}px screen"
            page.screenshot(path=str(ARTIFACTS / f"{shot_name}-{width}.png"), full_page=True)
        finally:
            page.close()


@pytest.mark.browser
def test_run_report_renders_in_chromium(browser, runs, tmp_path):
    check_in_browser(browser, write_report([runs[0]], tmp_path / "run.html"), "report-run")


@pytest.mark.browser
def test_comparison_renders_in_chromium(browser, runs, tmp_path):
    check_in_browser(browser, write_report(list(runs), tmp_path / "cmp.html"), "report-compare")


@pytest.mark.parametrize("val_size, caption", [(0, "(training)"), (100, "(training and validation)")])
def test_curves_caption_names_validation_only_when_there_was_one(synthetic_dataset, tmp_path, val_size, caption):
    from mnistkit import fit

    run = tmp_path / "run"
    fit(
        dataset=str(synthetic_dataset),
        model="logreg",
        epochs=2,
        dry_run=True,
        val_size=val_size,
        out=str(run),
        echo=False,
    )
    assert (run / "plots" / "curves.png").is_file()
    page = write_report([run]).read_text(encoding="utf-8")
    assert f"<figcaption>Loss and accuracy per epoch {caption}</figcaption>" in page
