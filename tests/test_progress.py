"""`python -m grader progress` and the progress() cell: the learner's own notebooks graded by the batch grader."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader import progress, store
from grader.build import ROOT
from grader.registry import exercises

WRONG_PAIRWISE = """def pairwise_sq_dists(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1).sqrt()  # distances, not their squares
"""


def answer(lesson: str, name: str) -> str:
    """The answer cell of `name` in a lesson notebook ("lessons": the stub, "solutions": the reference)."""
    cells = json.loads((ROOT / lesson).read_text())["cells"]
    return "".join(next(c["source"] for c in cells if c["id"] == f"{name}-answer"))


def put(lesson: str, answers: dict[str, str] | None = None) -> Path:
    """The learner's copy of a lesson in the workspace, with some answer cells written."""
    folder = Path(os.environ["TORCHDOJO_WORKSPACE"])
    folder.mkdir(exist_ok=True)
    nb = json.loads((ROOT / "lessons" / f"{lesson}.ipynb").read_text())
    for cell in nb["cells"]:
        name = cell["id"].removesuffix("-answer")
        if name in (answers or {}):
            cell["source"] = answers[name]
    path = folder / f"{lesson}.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    return path


def grader_progress(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", "progress", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_progress_grades_the_workspace_and_says_what_to_do_next():
    notebook = put("01_tensors", {"broadcast_shape": answer("solutions/01_tensors.ipynb", "broadcast_shape"),
                                  "pairwise_sq_dists": WRONG_PAIRWISE})
    run = grader_progress("01_tensors")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"Grades of the saved notebooks in {notebook.parent}" in out and "not saved yet are not seen" in out
    lines = [line.split()[:2] for line in out.splitlines() if line.startswith("  ") and line.split()[0] in "✓✗○"]
    tensors = [n for n, ex in exercises().items() if ex.lesson == "01_tensors"]
    assert [name for _, name in lines] == tensors  # the notebook's order
    marks = dict((name, mark) for mark, name in lines)
    assert marks["broadcast_shape"] == "✓" and marks["pairwise_sq_dists"] == "✗"
    assert {marks[n] for n in tensors[2:]} == {"○"}
    why = out.splitlines()[out.splitlines().index(next(ln for ln in out.splitlines() if "✗ pairwise" in ln)) + 1]
    assert why.startswith("      ") and "wrong values" in why, out  # the first line of what went wrong
    assert "01_tensors · 1/10 points" in out and "Total: 1/10 points · 1 of 7 exercises passed" in out
    assert f"Next: fix pairwise_sq_dists — open {notebook}" in out and 'hint("pairwise_sq_dists")' in out

    # The grades live in the workspace: a rerun without changes reads them back instead of grading again.
    from grader.progress_report import grade_workspace
    record = notebook.parent / ".torchdojo" / "grades" / "01_tensors" / "01_tensors.json"
    written = record.stat().st_mtime_ns
    entries, problems, _ = grade_workspace(["01_tensors"], notebook.parent, say=lambda m: None)
    assert record.stat().st_mtime_ns == written and not problems
    assert entries["pairwise_sq_dists"]["status"] == "failed" and entries["broadcast_shape"]["status"] == "passed"


def test_a_stub_lesson_is_not_graded_and_a_missing_or_broken_one_is_reported():
    workspace = put("01_tensors").parent  # as copied: every answer is the stub
    (workspace / "02_autograd.ipynb").write_text('{"cells": [')
    run = grader_progress()
    assert run.returncode == 0, run.stderr
    out = run.stdout
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("  ○")]
    assert rows == [n for n, ex in exercises().items() if ex.lesson == "01_tensors"] and "✓" not in out
    headers = [m.group(1) for m in re.finditer(r"^(\w+) · \d+/\d+ points$", out, re.MULTILINE)]
    assert headers == sorted({ex.lesson for ex in exercises().values()})  # every lesson, in course order
    assert "grading" not in run.stderr and not (workspace / ".torchdojo").exists()  # nothing was run
    assert "00_setup.ipynb is not in your workspace — run `python -m grader update` to add it" in out
    assert "could not be graded (unreadable): the notebook could not be read" in out
    assert "Course: 0/" in out and "Next: 00_setup — 00_setup.ipynb is not in your workspace" in out


@pytest.mark.parametrize("lesson", ["04"])
def test_an_unknown_lesson_lists_the_lessons_and_grades_nothing(lesson):
    put("00_setup", {"pick_device": answer("solutions/00_setup.ipynb", "pick_device")})
    run = grader_progress("00_setup", lesson)
    assert run.returncode == 2 and run.stdout == ""
    assert f"no lesson called '{lesson}'" in run.stderr and "The lessons are: 00_setup, 01_tensors" in run.stderr
    assert not (Path(os.environ["TORCHDOJO_WORKSPACE"]) / ".torchdojo").exists()


def test_the_progress_cell_shows_what_the_checks_recorded_in_notebook_order(capsys):
    store.update("one_hot", status="passed")
    store.update("pairwise_sq_dists", status="failed", problem="x (5, 3), y (4, 3): wrong values")
    progress("01_tensors")
    out = capsys.readouterr().out
    names = [line.split()[1] for line in out.splitlines() if line.startswith("  ") and line.split()[0] in "✓✗○"]
    assert names == [n for n, ex in exercises().items() if ex.lesson == "01_tensors"]
    assert "  ✓ one_hot" in out and "  ✗ pairwise_sq_dists" in out
    assert "      x (5, 3), y (4, 3): wrong values" in out  # the first line of what went wrong
    assert "Total: 1/10 points" in out and "Next: write broadcast_shape — open 01_tensors.ipynb" in out
    progress()
    assert "Course: 1/" in capsys.readouterr().out


def test_the_progress_cell_grades_the_saved_workspace_on_request(capsys):
    progress(grade=True)
    out = capsys.readouterr().out
    assert "no workspace at" in out and "run `python -m grader update` to create it" in out
    path = put("00_setup")
    progress("00_setup", grade=True)
    out = capsys.readouterr().out
    assert f"Grades of the saved notebooks in {path.parent}" in out and "  ○ pick_device" in out
    assert f"Next: write pick_device — open {path}" in out



def test_a_renamed_copy_of_a_lesson_is_pointed_out_and_several_lessons_can_be_asked_for(capsys):
    from grader.workspace import update
    folder = Path(os.environ["TORCHDOJO_WORKSPACE"])
    update(folder)
    (folder / "00_setup.ipynb").rename(folder / "00_setup-Copy1.ipynb")  # JupyterLab's "Duplicate", then a delete
    progress("00_setup", "01_tensors", grade=True)
    out = capsys.readouterr().out
    assert "00_setup.ipynb is not in your workspace, but 00_setup-Copy1.ipynb holds your copy of it — rename it " \
           "back to 00_setup.ipynb to have it graded" in out
    assert "01_tensors · 0/" in out  # both lessons, in course order
    lines = update(folder)
    assert "added 00_setup — your copy 00_setup-Copy1.ipynb is left as it is, but only 00_setup.ipynb is graded" \
        in lines[0] and not any("no longer in the course" in line for line in lines)
    progress("00_setup", grade=True)
    assert "00_setup-Copy1.ipynb is your copy of this lesson under another name: only 00_setup.ipynb is graded" \
        in capsys.readouterr().out
