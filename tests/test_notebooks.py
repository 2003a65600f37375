"""Every notebook in a real Jupyter kernel: solutions pass every check; lessons as shipped are not attempted."""
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from grader.build import ROOT, sources

LESSONS = [src.stem for src in sources()]


def execute(path, home, allow_errors: bool):
    nb = nbformat.read(path, as_version=4)
    env_home = os.environ.get("TORCHDOJO_HOME")
    os.environ["TORCHDOJO_HOME"] = str(home)  # the kernel inherits it: progress lands in the test's folder
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=allow_errors,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_home is not None:
            os.environ["TORCHDOJO_HOME"] = env_home
    return nb


def check_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


@pytest.mark.notebook
@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_notebook_passes_every_check(lesson, tmp_path):
    nb = execute(ROOT / "solutions" / f"{lesson}.ipynb", tmp_path, allow_errors=False)
    progress = json.loads((tmp_path / "progress.json").read_text())
    checked = [c.metadata.nbgrader.grade_id.removesuffix("-check") for c in check_cells(nb)]
    assert checked and all(progress[name]["status"] == "passed" for name in checked), progress


@pytest.mark.notebook
@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_notebook_as_shipped_is_not_attempted(lesson, tmp_path):
    nb = execute(ROOT / "lessons" / f"{lesson}.ipynb", tmp_path, allow_errors=True)
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if cell in check_cells(nb):
            text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            assert errors and errors[0].ename == "CheckFailed" and "not attempted" in text, cell.source
        else:
            assert not errors, f"a teaching cell fails in the learner's notebook:\n{cell.source}\n{errors}"
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress and all(entry["status"] == "not_attempted" for entry in progress.values()), progress
