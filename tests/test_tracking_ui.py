"""The MLflow UI in a real browser (headless Chromium): the runs table with test_macro_f1, the compare view of a
baseline and a fine-tuned run, a run's confusion matrix. Screenshots go to tmp, or to $SCREENSHOT_DIR
(`make screenshots` regenerates the README's, in docs/img/)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from helpers import Tiny, mlflow_server, write_jsonl

from pipeline.baseline import train_baseline
from pipeline.train import train

pytestmark = pytest.mark.slow  # an MLflow server and Chromium: `make test-slow`, run by CI
CHROMIUM = Path("/usr/bin/chromium")
EXPERIMENT = "fixture-news-ui"
ML = "workflowType=machine_learning"  # MLflow 3 opens in its GenAI mode; the runs table lives in "Model training"
QUIET = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
         "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")  # keep the assistant panel closed
ROW = 45  # px, a row of the compare view's metric grid
CELLS_LEVEL_WITH = """(cells, top) => cells.map(c => [c.getBoundingClientRect(), c.innerText])
    .filter(([box]) => Math.abs(box.top - top) < 3).sort(([a], [b]) => a.left - b.left).map(([, text]) => text)"""


def _unavailable(reason: str) -> None:
    """Skip, unless screenshots were asked for (`make screenshots`): then a missing browser is an error."""
    if os.environ.get("SCREENSHOT_DIR"):
        pytest.fail(f"SCREENSHOT_DIR is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: $SCREENSHOT_DIR (relative to the working directory), else a temp dir."""
    target = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by playwright (no `playwright install`)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def ui(browser, tmp_path_factory, corpus, tiny_bert) -> Iterator[dict[str, Any]]:
    """An MLflow server holding a baseline and a fine-tuned run in one experiment, and a browser page on it."""
    root = tmp_path_factory.mktemp("ui")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "server") as uri:
        tiny = Tiny(root, write_jsonl(root / "c.jsonl", corpus), tiny_bert)
        cfg = tiny.prepared("tracking.enabled=true", f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
                            "train.epochs=2")
        runs = {"train": train(cfg), "baseline": train_baseline(cfg)}
        client = mlflow.MlflowClient(uri)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(QUIET)
        try:
            yield {"uri": uri, "page": context.new_page(), "runs": runs, "client": client,
                   "experiment": client.get_experiment_by_name(EXPERIMENT).experiment_id}
        finally:
            context.close()
            mlflow.set_tracking_uri(None)  # the pipeline's connect() exported it; later tests must not inherit it


def _metric(ui: dict[str, Any], kind: str, key: str = "test_macro_f1") -> float:
    return ui["client"].get_run(ui["runs"][kind].run_id).data.metrics[key]


def _shown(text: str, value: float) -> bool:
    """The UI rounds metrics to 3 significant digits (`1`, `0.952`, `6.000e-12`)."""
    return abs(float(text.strip()) - value) <= 5e-3 * max(abs(value), 1e-12)


def _pick_columns(page: Any, add: tuple[str, ...], remove: tuple[str, ...]) -> None:
    """Tick and untick columns in the runs table's `Columns` menu."""
    page.get_by_role("button", name="Columns").click()
    for name in (*add, *remove):
        page.get_by_placeholder("Search columns").fill(name)
        node = page.locator("[class*=tree-treenode]", has_text=re.compile(f"^{re.escape(name)}$"))
        node.locator("[class*=tree-checkbox]").first.click()
    page.keyboard.press("Escape")


def test_runs_table_shows_both_runs_with_test_macro_f1(ui, shots):
    page, exp = ui["page"], ui["experiment"]
    page.goto(f"{ui['uri']}/#/experiments/{exp}/runs?{ML}&orderByKey=metrics.%60test_macro_f1%60&orderByAsc=false")
    for result in ui["runs"].values():
        page.get_by_text(result.model_dir.name, exact=True).first.wait_for()  # run name = model directory name
    _pick_columns(page, add=("test_macro_f1", "test_accuracy"), remove=("Dataset", "Source"))
    header = page.locator('[role=columnheader][col-id="metrics.`test_macro_f1`"]')
    header.wait_for()
    assert header.is_visible()
    for kind, result in ui["runs"].items():
        cell = page.locator(f'[role=row][row-id="{result.run_id}"] [col-id="metrics.`test_macro_f1`"]')
        assert cell.is_visible() and _shown(cell.inner_text(), _metric(ui, kind)), kind
    page.screenshot(path=shots / "mlflow-runs.png")


def _compare_metric_rows(page: Any, wanted: tuple[str, ...], keys: list[str]) -> dict[str, list[str]]:
    """The values the compare view shows, left to right, for each metric in `wanted` (neighbours in sorted `keys`).

    The metric grid is virtualised and shows six rows, so it is scrolled to the first wanted row. Its names column
    follows the values column one scroll event late, hence the one-pixel nudges until the names are rendered.
    """
    grids = page.get_by_role("switch", name="Metrics - Show diff only").locator("xpath=../..").get_by_role("grid")
    grids.nth(1).hover()
    page.mouse.wheel(0, ROW * max(min(keys.index(k) for k in wanted) - 1, 0))
    for nudge in (-1, 1) * 5:
        page.wait_for_timeout(250)
        page.mouse.wheel(0, nudge)
        if all(page.get_by_role("link", name=k, exact=True).is_visible() for k in wanted):
            break
    rows = {}
    for key in wanted:
        name = page.get_by_role("link", name=key, exact=True)
        assert name.is_visible(), key
        top = name.evaluate("e => e.parentElement.getBoundingClientRect().top")
        rows[key] = grids.nth(1).locator("div[style*='position: absolute']").evaluate_all(CELLS_LEVEL_WITH, top)
    return rows


def test_compare_view_shows_test_metrics_of_both_runs(ui, shots):
    page, runs = ui["page"], ui["runs"]
    ids = [runs["train"].run_id, runs["baseline"].run_id]
    page.goto(f"{ui['uri']}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([ui['experiment']])}&{ML}")
    page.get_by_text("Comparing 2 Runs from 1 Experiment").wait_for()
    for result in runs.values():
        assert page.get_by_role("link", name=result.run_id).is_visible()
        assert page.get_by_text(result.model_dir.name, exact=True).first.is_visible()
    for section in ("Visualizations", "Parameters"):  # collapsed, so run names and metrics share one screen
        page.locator("[role=button][aria-expanded]", has_text=section).click()
    keys = sorted({k for r in runs.values() for k in ui["client"].get_run(r.run_id).data.metrics})
    # test_log_loss differs between the two runs, so a swapped column would show
    shown = _compare_metric_rows(page, ("test_log_loss", "test_macro_f1"), keys)
    for key, texts in shown.items():
        assert len(texts) == 2 and all(_shown(t, _metric(ui, kind, key)) for t, kind in zip(texts, runs, strict=True))
    page.get_by_text("Comparing 2 Runs from 1 Experiment").scroll_into_view_if_needed()
    page.screenshot(path=shots / "mlflow-compare.png")


def test_confusion_matrix_artifact_is_displayed(ui, shots):
    page, result = ui["page"], ui["runs"]["train"]
    assert "confusion_matrix.png" in {a.path for a in ui["client"].list_artifacts(result.run_id)}
    page.goto(f"{ui['uri']}/#/experiments/{ui['experiment']}/runs/{result.run_id}/artifacts/confusion_matrix.png?{ML}")
    image = page.get_by_role("img", name="confusion_matrix.png")
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    shown = image.evaluate("""async img => {
        const bytes = await (await fetch(img.src)).arrayBuffer();
        return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)))
            .map(b => b.toString(16).padStart(2, '0')).join('');
    }""")
    assert shown == hashlib.sha256((result.model_dir / "confusion_matrix.png").read_bytes()).hexdigest()
    page.screenshot(path=shots / "mlflow-confusion-matrix.png")
