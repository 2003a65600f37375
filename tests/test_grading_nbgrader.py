"""The nbgrader path: the exported course goes through the real nbgrader CLI, start to finish."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nbformat import from_dict
from nbgrader.api import Gradebook

from adversarial.build import solution_answers
from grader.grading.nbgrader_course import ALLOW_HIDDEN_ENV, RedactHiddenCases, export, hidden_seed_refusal
from grader.registry import get
from grader.runner import HIDDEN_SEED_ENV, PUBLIC_SEED, run_exercise

LESSON = "01_tensors"
SEED = "4242"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")


def nbgrader(course: Path, *args: str, env: dict, ok: bool = True) -> str:
    env = dict(env, PATH=f"{Path(NBGRADER).parent}{os.pathsep}{env.get('PATH', '')}")  # it runs `alembic`
    done = subprocess.run([NBGRADER, *args], cwd=course, capture_output=True, text=True, env=env, timeout=600)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr


def lookup_table_answer() -> str:
    """A broadcast_shape that only knows the public round's inputs (recorded by running its check on the
    solution): it passes the public round and fails the hidden one."""
    ns = {}
    exec(solution_answers(LESSON)["broadcast_shape"], ns)
    table = {}

    def recording(a, b):
        key = (tuple(a), tuple(b))
        try:
            table[key] = ns["broadcast_shape"](a, b)
        except ValueError:
            table[key] = None
            raise
        return table[key]

    assert run_exercise(get("broadcast_shape"), recording, rounds=[(PUBLIC_SEED, False)]).passed
    return (f"import os\nprint('my seed is', os.environ.get('{HIDDEN_SEED_ENV}'))\n"
            f"TABLE = {table!r}\n\n"
            "def broadcast_shape(a, b):\n"
            "    shape = TABLE.get((tuple(a), tuple(b)), ())\n"
            "    if shape is None:\n"
            "        raise ValueError('these sizes clash')\n"
            "    return shape\n")


def submit(course: Path, student: str, answers: dict[str, str]) -> None:
    nb = json.loads((course / "release" / LESSON / f"{LESSON}.ipynb").read_text())
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
        if grade_id.removesuffix("-answer") in answers:
            cell["source"] = answers[grade_id.removesuffix("-answer")]
        if grade_id == "broadcast_shape-check":
            cell["source"] = "print('all tests passed')"  # edited check cells are restored by nbgrader
    folder = course / "submitted" / student / LESSON
    folder.mkdir(parents=True)
    (folder / f"{LESSON}.ipynb").write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The lesson released with the seed set (generate_assignment ignores it), and three submissions: alice
    solves everything, bob gets broadcast_shape wrong, carol hard-codes its public cases and prints the seed."""
    tmp = tmp_path_factory.mktemp("nbgrader")
    course = tmp / "course"
    export(course, [LESSON])
    env = dict(os.environ, TORCHDOJO_HOME=str(tmp / "home"), **{HIDDEN_SEED_ENV: SEED})
    env.pop(ALLOW_HIDDEN_ENV, None)
    nbgrader(course, "generate_assignment", LESSON, "--force", env=env)
    release = (course / "release" / LESSON / f"{LESSON}.ipynb").read_text()
    assert "BEGIN SOLUTION" not in release and "raise NotImplementedError()" in release
    submit(course, "alice", solution_answers(LESSON))
    submit(course, "bob", {"broadcast_shape": "def broadcast_shape(a, b):\n    return tuple(max(p, q) for p, q in "
                                              "zip(a, b))\n"})
    submit(course, "carol", {"broadcast_shape": lookup_table_answer()})
    return course, env


@pytest.mark.notebook
@pytest.mark.skipif(not os.path.exists(NBGRADER), reason="nbgrader CLI not installed")
def test_autograde_refuses_a_hidden_seed_without_the_opt_in(course):
    course, env = course
    log = nbgrader(course, "autograde", LESSON, "--force", env=env, ok=False)
    assert "the learner's code can read the seed" in log and "python -m grader grade" in log, log
    assert f"{ALLOW_HIDDEN_ENV}=1" in log, log
    assert not (course / "autograded").exists()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "torchdojo") as gb:
        assert gb.students == []


@pytest.mark.notebook
@pytest.mark.skipif(not os.path.exists(NBGRADER), reason="nbgrader CLI not installed")
def test_the_whole_nbgrader_cycle_keeps_hidden_cases_and_the_seed_out_of_feedback(course):
    course, env = course
    nbgrader(course, "autograde", LESSON, "--force", env={**env, ALLOW_HIDDEN_ENV: "1"})
    # The hidden round ran in carol's kernel: her lookup table failed hidden cases, which show no inputs even in
    # the autograded notebook (the instructor's copy); her printed seed is there ...
    carol = json.loads((course / "autograded" / "carol" / LESSON / f"{LESSON}.ipynb").read_text())
    outputs = json.dumps([c.get("outputs", []) for c in carol["cells"]], ensure_ascii=False)
    assert re.search(r"✗ hidden case \d+", outputs) and "broadcast_shape((" not in outputs
    printed = "".join("".join(o["text"]) for c in carol["cells"] for o in c.get("outputs", [])
                      if o["output_type"] == "stream")  # one print may arrive as several stream outputs
    assert f"my seed is {SEED}" in printed
    # ... and not in the feedback (generate_feedback and export need no opt-in).
    nbgrader(course, "generate_feedback", LESSON, "--force", env=env)
    nbgrader(course, "export", "--to", str(course / "grades.csv"), env=env)

    rows = {r["student_id"]: r for r in csv.DictReader((course / "grades.csv").open())}
    assert float(rows["alice"]["score"]) == float(rows["alice"]["max_score"]) > 0, rows
    assert float(rows["bob"]["score"]) == 0.0 and float(rows["carol"]["score"]) == 0.0, rows
    feedback = {s: (course / "feedback" / s / LESSON / f"{LESSON}.html").read_text() for s in rows}
    for html in feedback.values():
        assert SEED not in html
    assert "✗ hidden case" in feedback["carol"] and "&lt;hidden seed&gt;" in feedback["carol"]
    assert "broadcast_shape((), (3,)) → (3,)" in feedback["bob"]  # public cases stay readable


def test_refusal_needs_a_seed_and_no_opt_in():
    assert hidden_seed_refusal({}) is None
    assert hidden_seed_refusal({HIDDEN_SEED_ENV: SEED, ALLOW_HIDDEN_ENV: "1"}) is None
    assert "python -m grader grade" in hidden_seed_refusal({HIDDEN_SEED_ENV: SEED})


def test_redaction_covers_every_kind_of_output(monkeypatch):
    monkeypatch.setenv(HIDDEN_SEED_ENV, SEED)
    leak = f"my seed is {SEED}"
    cell = from_dict({"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": leak},
        {"output_type": "error", "ename": "AssertionError", "evalue": leak, "traceback": [leak, leak]},
        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
         "data": {"text/plain": leak, "text/html": f"<pre>{leak}</pre>", "application/json": {"a": [leak]}}},
        {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": leak, "image/png": "4242AAAA"}},
    ]})
    nb, _ = RedactHiddenCases()(from_dict({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}), {})
    outputs = json.dumps(nb.cells[0].outputs, ensure_ascii=False)
    assert SEED not in outputs.replace("4242AAAA", "") and outputs.count("my seed is <hidden seed>") == 8
    assert "4242AAAA" in outputs  # base64 images are left alone
