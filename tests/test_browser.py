"""The explorers where readers use them: JupyterLab in a real (headless) Chromium.

Starts JupyterLab on 127.0.0.1 (free port, token auth) over a copy of two notebooks, runs all
their cells, then drives the widgets with Playwright: Segment in the episode explorer (images and
IoU text appear, and change with the episode), a slider of the correlation explorer (the figure
changes). Screenshots go to ``$HSNET_BROWSER_ARTIFACTS`` (default: a temporary folder), printed.

The copies run in a temporary folder (JupyterLab saves notebooks it runs) that links to
``notebooks/runs``, so trained toy runs left by ``pytest --nbval notebooks/`` are reused; without
them the explorer notebook trains its two models first (several minutes).
Needs Debian's ``chromium`` (or ``$HSNET_CHROMIUM``) and ``pip install playwright``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHROMIUM = os.environ.get("HSNET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("HSNET_REQUIRE_BROWSER") == "1"  # CI: a missing browser is a failure, not a skip
try:
    from playwright import sync_api as playwright
except ImportError:
    playwright = None
MISSING = "pip install playwright" if playwright is None else "apt-get install chromium (or set HSNET_CHROMIUM)"
if REQUIRED and (playwright is None or CHROMIUM is None):
    raise RuntimeError(f"HSNET_REQUIRE_BROWSER=1 but the browser test cannot run: {MISSING}")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(playwright is None or CHROMIUM is None, reason=f"no browser for this test: {MISSING}"),
    pytest.mark.timeout(1800),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HSNET_BROWSER_ARTIFACTS") or tmp_path_factory.mktemp("browser-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token) of a JupyterLab serving copies of notebooks 01 and 07."""
    root = tmp_path_factory.mktemp("lab")
    for name in ("01_hypercorrelation.ipynb", "07_explorer.ipynb"):  # copies without outputs: a fresh run
        nb = json.loads((NOTEBOOKS / name).read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        (root / name).write_text(json.dumps(nb))
    (NOTEBOOKS / "runs").mkdir(exist_ok=True)
    (root / "runs").symlink_to(NOTEBOOKS / "runs", target_is_directory=True)
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:  # containers and CI run as root
        cmd.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(root / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(1)
    else:
        server.terminate()
        pytest.fail("JupyterLab did not answer within 120 s")
    yield url, token
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


KERNEL_READY = """() => document.querySelectorAll('.jp-CodeCell').length > 0
    && /Python 3 \\(ipykernel\\) \\| Idle/.test(document.body.innerText)"""  # the status bar, bottom left
ALL_RUN = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
    const last = prompts.length ? prompts[prompts.length - 1].innerText.trim() : '';
    return /^\\[\\d+\\]:$/.test(last) && /Python 3 \\(ipykernel\\) \\| Idle/.test(document.body.innerText);
}"""  # Run All ends on the last cell: it shows its execution count ("[11]:") and the kernel is idle


def open_and_run_all(browser, lab, name: str, timeout_s: int, artifacts: Path):
    """Open notebook ``name`` in JupyterLab at 1280x800, run all cells, wait until every cell has run."""
    url, token = lab
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{url}/lab/tree/{name}?reset&token={token}", wait_until="domcontentloaded")  # reset: no restored tabs
    page.wait_for_function(KERNEL_READY, timeout=180_000, polling=500)
    page.screenshot(path=str(artifacts / f"{name}_opened.png"))
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    try:
        page.wait_for_function(ALL_RUN, timeout=timeout_s * 1000, polling=1000)
    finally:
        page.screenshot(path=str(artifacts / f"{name}_after_run_all.png"), full_page=True)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"{name} raised: {tracebacks[:1]}"
    return page


def widget_images(page):
    return page.locator("img.widget-image")


def test_episode_explorer_segments_in_jupyterlab(browser, lab, artifacts):
    page = open_and_run_all(browser, lab, "07_explorer.ipynb", 1500, artifacts)
    status = page.locator(".widget-html-content").filter(has_text="IoU").first
    status.wait_for(timeout=60_000)
    images = widget_images(page)
    images.first.wait_for(timeout=60_000)
    first_src = images.first.get_attribute("src")

    segment = page.get_by_role("button", name="Segment", exact=True)
    segment.scroll_into_view_if_needed()
    segment.click()
    page.wait_for_timeout(1500)
    assert "IoU" in status.inner_text() and "HSNet" in status.inner_text()
    before = status.inner_text()

    episode = page.locator(".widget-inline-hbox").filter(has_text="episode").locator("input")
    episode.fill("7")
    episode.press("Enter")
    segment.click()
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[status.element_handle(), before], timeout=60_000)
    after = status.inner_text()
    assert after.startswith("episode 7") and "IoU" in after
    page.wait_for_timeout(1500)
    assert widget_images(page).first.get_attribute("src") != first_src
    segment.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "explorer_episode_7.png"), full_page=True)
    # the first control row fits a 1280 px window: the Segment button is on the same line as the fold slider
    fold = page.locator(".widget-slider").first.bounding_box()
    button = segment.bounding_box()
    assert abs(fold["y"] - button["y"]) < 40 and fold["width"] > 150
    page.close()


def test_correlation_explorer_slider_redraws_the_figure(browser, lab, artifacts):
    page = open_and_run_all(browser, lab, "01_hypercorrelation.ipynb", 900, artifacts)
    images = widget_images(page)
    images.last.wait_for(timeout=60_000)
    before = images.last.get_attribute("src")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "correlation_before.png"))
    handle.click()
    for _ in range(15):
        handle.press("ArrowLeft")
    page.wait_for_function(
        "([sel, old]) => { const i = [...document.querySelectorAll(sel)].pop(); return i && i.src !== old; }",
        arg=["img.widget-image", before],
        timeout=60_000,
    )
    page.screenshot(path=str(artifacts / "correlation_after_slider.png"))
    page.close()
