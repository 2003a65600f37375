"""Real JupyterLab in headless Chromium: a learner opens a lesson, runs it, writes an answer and checks it."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from grader.build import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (bash dojo test installs it)"),
]

ANSWER = '''def pick_device(prefer=None):
    """My answer."""
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count()) if torch.cuda.is_available()]
    names += ["mps"] if torch.backends.mps.is_available() else []
    if prefer is None:
        return torch.device("cuda" if len(names) > 1 and names[1].startswith("cuda") else names[-1]
                            if names[-1] == "mps" else "cpu")
    if prefer == "cuda" and any(n.startswith("cuda") for n in names):
        return torch.device("cuda")
    if prefer in names:
        return torch.device(prefer)
    raise ValueError(f"{prefer!r} is not available; available: {names}")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving the learner's workspace, made by `python -m grader update` as `bash dojo course` does."""
    work = tmp_path_factory.mktemp("course")
    port, token = free_port(), "torchdojo-test"
    env = dict(os.environ, TORCHDOJO_HOME=str(work / "home"), TORCHDOJO_WORKSPACE=str(work / "workspace"),
               JUPYTER_CONFIG_DIR=str(work / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(work / "jupyter-runtime"))
    made = subprocess.run([sys.executable, "-m", "grader", "update"], env=env, capture_output=True, text=True)
    assert made.returncode == 0 and "added 00_setup" in made.stdout, made.stdout + made.stderr
    # What must stay as it is: the course's lessons/, and the learner's notebook until they save it.
    unchanged = [*(ROOT / "lessons").glob("*.ipynb"), work / "workspace" / "00_setup.ipynb"]
    unchanged = {p: p.read_bytes() for p in unchanged}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--notebook-dir={work / 'workspace'}", "--allow-root",
         "--expose-app-in-browser", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start:\n" + (work / "lab.log").read_text()[-3000:])
    yield url, token, work, unchanged
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        yield browser.new_page(viewport={"width": 1400, "height": 1000})
        browser.close()


def run_all_and_wait(page):
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        "() => { const nb = window.jupyterapp.shell.currentWidget;"
        " return nb && nb.sessionContext.session && nb.sessionContext.session.kernel.status === 'idle'"
        " && [...document.querySelectorAll('.jp-InputPrompt')].every(p => !p.textContent.includes('*')); }",
        timeout=120_000)


def test_learner_runs_a_lesson_writes_an_answer_and_gets_it_checked(lab, page):
    url, token, work, unchanged = lab
    page.goto(f"{url}/lab/tree/00_setup.ipynb?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel",
                           timeout=120_000)

    # As shipped: the check cell reports "not attempted" and stops Run All with an AssertionError.
    run_all_and_wait(page)
    check_cell = page.locator(".jp-CodeCell", has_text="check(pick_device)").last
    assert "not attempted yet" in check_cell.inner_text()

    # Check cells are locked: the cell's metadata says so, and JupyterLab makes its editor read-only.
    assert page.evaluate("""() => {
        const cells = window.jupyterapp.shell.currentWidget.content.widgets;
        const check = cells.find(c => c.model.sharedModel.getSource() === 'check(pick_device)');
        return check.model.getMetadata('editable') === false && check.readOnly === true; }""")

    # The learner types an answer into the stub cell, runs it, then runs the check.
    stub = page.locator(".jp-CodeCell", has_text="raise NotImplementedError()").first
    stub.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(ANSWER)
    page.keyboard.press("Shift+Enter")
    check_cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                           ".some(o => o.textContent.includes('✓ pick_device'))", timeout=60_000)
    page.screenshot(path=str(work / "checked.png"))
    assert "all" in check_cell.inner_text() and "1/1 points" in check_cell.inner_text()
    # Neither lessons/ nor the workspace notebook on disk was touched (the learner has not saved).
    assert {p: p.read_bytes() for p in unchanged} == unchanged
