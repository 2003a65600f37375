"""Hostile submissions, graded in one batch with a hidden seed: each costs only what it attacks.

The cases and their expectations are in tests/adversarial/cases.py.
"""
import os
import re

import pytest

from adversarial.cases import CASES, FULL, HIDDEN_SEED, LESSON, write_all
from grader.grading.batch import grade
from grader.grading.judge import Limits
from grader.registry import exercises

SANDBOX_UIDS = range(61000, 61100)


def _sandbox_processes() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration, ValueError):
                continue
            if uid in SANDBOX_UIDS:
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adversarial")
    write_all(folder / "submitted")
    saved = os.environ.get("TORCHDOJO_HIDDEN_SEED")
    os.environ["TORCHDOJO_HIDDEN_SEED"] = HIDDEN_SEED
    try:
        records = grade(LESSON, [str(folder / "submitted")], folder / "out", workers=2,
                        limits=Limits(timeout=5, memory_mb=1024), log=lambda m: None)
    finally:
        if saved is None:
            os.environ.pop("TORCHDOJO_HIDDEN_SEED")
        else:
            os.environ["TORCHDOJO_HIDDEN_SEED"] = saved
    return folder, {r["student"]: r for r in records}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_submission_costs_only_what_it_attacks(batch, case):
    _, records = batch
    record = records[case.name]
    assert record["status"] == case.status, record
    by_name = {ex["name"]: ex for ex in record["exercises"]}
    assert set(by_name) == {n for n, ex in exercises().items() if ex.lesson == LESSON}
    for name, ex in by_name.items():
        want = case.expect.get(name, FULL)
        if want == FULL:
            assert ex["points"] == ex["max_points"] and ex["status"] == "passed", \
                f"{case.name}: {name} should be unaffected:\n{ex['message']}"
        else:
            assert ex["points"] == 0 and ex["status"] != "passed", f"{case.name}: {name} passed"
            assert any(f.lower() in ex["message"].lower() for f in want.split("|")), \
                f"{case.name}: {name}'s message should mention {want!r}:\n{ex['message']}"
    if case.note:
        assert any(case.note in n for n in record["notes"]), record["notes"]


def test_nothing_of_any_sandbox_is_left_running(batch):
    assert _sandbox_processes() == []


def test_feedback_never_shows_hidden_cases(batch):
    folder, records = batch
    for student in records:
        text = (folder / "out" / "feedback" / f"{student}.txt").read_text()
        assert HIDDEN_SEED not in text
        for line in text.splitlines():
            if "hidden case" in line and line.strip().startswith("✗"):
                assert re.fullmatch(r"\s*✗ hidden case \d+", line), line
    hard = (folder / "out" / "hard_coded_visible_cases.json").read_text()
    assert "→" not in "".join(c["name"] for ex in records["hard_coded_visible_cases"]["exercises"]
                               for c in ex["cases"] if c["hidden"]), hard


def test_gradebook_has_every_student(batch):
    folder, records = batch
    rows = (folder / "out" / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("student,lesson,score,max_score,status,")
    assert len(rows) == 1 + len(CASES)


def test_rerun_regrades_nothing_and_gives_the_same_scores(batch):
    folder, records = batch
    saved = os.environ.get("TORCHDOJO_HIDDEN_SEED")
    os.environ["TORCHDOJO_HIDDEN_SEED"] = HIDDEN_SEED
    logged = []
    try:
        again = grade(LESSON, [str(folder / "submitted")], folder / "out", workers=2,
                      limits=Limits(timeout=5, memory_mb=1024), log=logged.append)
    finally:
        if saved is None:
            os.environ.pop("TORCHDOJO_HIDDEN_SEED")
    assert not any(m.startswith("grading") for m in logged), logged
    assert {r["student"]: r["score"] for r in again} == {s: r["score"] for s, r in records.items()}


def test_sandboxed_verdicts_match_the_in_process_check(batch):
    """The same cases pass, fail and are skipped as when the learner runs check() in a notebook."""
    from adversarial.build import solution_answers
    from grader import evaluate
    _, records = batch
    namespace = {}
    exec("import torch\n", namespace)
    for source in solution_answers(LESSON).values():
        exec(source, namespace)
    for ex in records["deleted_check_cells"]["exercises"]:
        local = evaluate(namespace[ex["name"]], ex["name"])
        public = [(c["name"], c["passed"], c["skipped"]) for c in ex["cases"] if not c["hidden"]]
        assert public == [(c.name, c.passed, c.skipped) for c in local.cases], ex["name"]
