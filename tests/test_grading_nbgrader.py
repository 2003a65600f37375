"""The nbgrader path: the exported course goes through the real nbgrader CLI, start to finish."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adversarial.build import solution_answers
from grader.grading.nbgrader_course import export, redact

LESSON = "00_setup"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")


def nbgrader(course: Path, *args: str, env=None) -> str:
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(NBGRADER).parent}{os.pathsep}{env.get('PATH', '')}"  # nbgrader runs `alembic` from PATH
    done = subprocess.run([NBGRADER, *args], cwd=course, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def submit(course: Path, student: str, answer: str) -> None:
    nb = json.loads((course / "release" / LESSON / f"{LESSON}.ipynb").read_text())
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "pick_device-answer":
            cell["source"] = answer
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "pick_device-check":
            cell["source"] = "print('all tests passed')"  # edited check cells are restored by nbgrader
    folder = course / "submitted" / student / LESSON
    folder.mkdir(parents=True)
    (folder / f"{LESSON}.ipynb").write_text(json.dumps(nb))


@pytest.mark.notebook
@pytest.mark.skipif(not os.path.exists(NBGRADER), reason="nbgrader CLI not installed")
def test_the_whole_nbgrader_cycle(tmp_path):
    course = tmp_path / "course"
    export(course, [LESSON])
    assert (course / "source" / LESSON / f"{LESSON}.ipynb").exists()
    nbgrader(course, "generate_assignment", LESSON, "--force")
    release = (course / "release" / LESSON / f"{LESSON}.ipynb").read_text()
    assert "BEGIN SOLUTION" not in release and "raise NotImplementedError()" in release

    submit(course, "alice", solution_answers(LESSON)["pick_device"])
    submit(course, "bob", "def pick_device(prefer=None):\n    return torch.device('cpu')\n")
    env = dict(os.environ, TORCHDOJO_HIDDEN_SEED="4242", TORCHDOJO_HOME=str(tmp_path / "home"))
    nbgrader(course, "autograde", LESSON, "--force", env=env)
    nbgrader(course, "generate_feedback", LESSON, "--force", env=env)
    nbgrader(course, "export", "--to", str(tmp_path / "grades.csv"), env=env)

    rows = {r["student_id"]: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert float(rows["alice"]["score"]) == 1.0 and float(rows["bob"]["score"]) == 0.0, rows
    for student in ("alice", "bob"):
        html = (course / "feedback" / student / LESSON / f"{LESSON}.html").read_text()
        assert "hidden case:" not in html
    bob = (course / "feedback" / "bob" / LESSON / f"{LESSON}.html").read_text()
    assert "pick_device" in bob and "cases failed" in bob


def test_redact_keeps_public_cases_and_drops_hidden_ones():
    report = ("✗ f: 3 of 9 cases failed · 0/1 points\n  ✗ x (4, 5)\n      wrong values\n"
              "  ✗ hidden case: x (7, 3)\n      wrong values (3 of 21 differ)\n  ✓ 6 other cases passed")
    assert redact(report) == ("✗ f: 3 of 9 cases failed · 0/1 points\n  ✗ x (4, 5)\n      wrong values\n"
                              "  ✗ hidden case\n  ✓ 6 other cases passed")
