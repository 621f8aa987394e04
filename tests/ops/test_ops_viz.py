"""kedro-viz in headless Chromium: `kedro viz run` serves the project's pipelines on 127.0.0.1 (no
version check reaches the internet); the mash pipeline's graph shows its five phases' nodes and the
datasets between them; a screenshot is saved under reports/ops/."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from tests.conftest import REPO, make_project, serve
from tests.ops.conftest import BIN, OFFLINE, offline_page

pytestmark = pytest.mark.ops

PHASE_NODES = ["mash.ingest", "mash.preprocess", "mash.train", "mash.evaluate", "mash.report"]
DATASETS = ["mash.clean", "mash.noisy", "mash.model_input", "mash.jobs", "mash.job_outputs",
            "mash.per_image", "mash.table_rows", "mash.report"]


@pytest.fixture(scope="module")
def viz(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("viz"))
    # only MASH's pipeline in this copy: the test is about the UI, not about every paper's import time
    for other in (project / "src" / "cvpr24" / "pipelines").iterdir():
        if other.is_dir() and other.name not in ("mash", "__pycache__"):
            shutil.rmtree(other)
    for conf in project.glob("conf/*/catalog/*.yml"):
        if conf.stem not in ("mash", "papers"):  # papers.yml: the factories every paper's catalog shares
            conf.unlink()
    with serve(lambda port: [str(BIN / "kedro"), "viz", "run", "--host", "127.0.0.1", "--port", str(port),
                             "--no-browser", "--pipeline", "mash", "--env", "ci"], "/api/main", project / "viz.log",
               cwd=project, timeout=180, **OFFLINE) as url:
        yield url


def test_viz_api_holds_the_mash_graph(viz):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = json.loads(opener.open(f"{viz}/api/main", timeout=30).read())
    names = {n["name"] for n in data["nodes"]}
    tags = {t["id"] for t in data["tags"]}
    assert {"ingest", "preprocess", "train", "evaluate", "report"} <= tags
    for name in PHASE_NODES + DATASETS:
        assert any(name in n or name.replace("mash.", "") in n for n in names), (name, sorted(names))


def test_viz_draws_the_five_phases_and_their_datasets(viz, browser):
    page = offline_page(browser, 1800, 1100)
    page.set_default_timeout(60_000)
    page.goto(f"{viz}/?expandAllPipelines=true")  # the nodes sit in the collapsible `mash` namespace
    page.locator("svg .pipeline-node").first.wait_for()
    page.wait_for_timeout(1500)
    drawn = page.locator("svg .pipeline-node").all_text_contents()
    text = " ".join(drawn)
    out = REPO / "reports" / "ops"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "kedro_viz_mash.png"))
    for name in PHASE_NODES + DATASETS:  # every phase's node and the datasets between them are drawn
        assert name in drawn or name.removeprefix("mash.") in drawn, (name, drawn)
    assert page.locator("svg .pipeline-node--data").count() >= 12, drawn
    assert page.locator("svg .pipeline-edge").count() >= 20
    sidebar = page.inner_text("body").lower()
    for phase in ("ingest", "preprocess", "train", "evaluate", "report"):  # the phases, as tags to filter by
        assert phase in sidebar, phase
    assert text
    page.close()
