"""The batch grader gives the verdict the learner saw in the notebook: for every lesson (so each new lesson is
covered the day it lands), and for a sample of the wrong implementations the lessons' own tests use."""
import ast
import inspect
import textwrap

import pytest

import test_lesson01_tensors
import test_lesson07_training
from adversarial.build import notebook, write
from grader import evaluate
from grader.registry import lessons
from grader.grading.batch import grade


def _grade(tmp_path, lesson: str, submissions: dict) -> dict:
    for student, nb in submissions.items():
        write(tmp_path / "in" / f"{student}.ipynb", nb)
    records = grade(lesson, [str(tmp_path / "in")], tmp_path / "out", workers=2, log=lambda m: None)
    return {r["student"]: r for r in records}


@pytest.mark.parametrize("lesson", lessons())
def test_the_solution_gets_full_marks_and_the_stub_zero(tmp_path, lesson):
    records = _grade(tmp_path, lesson, {"solved": notebook(lesson), "stub": notebook(lesson, correct=False)})
    solved, stub = records["solved"], records["stub"]
    assert solved["status"] == "graded" and solved["score"] == solved["max_score"], \
        "\n".join(ex["message"] for ex in solved["exercises"] if ex["status"] != "passed")
    assert stub["status"] == "graded" and stub["score"] == 0
    assert {ex["name"]: ex["status"] for ex in stub["exercises"]} == \
        {ex["name"]: "not_attempted" for ex in stub["exercises"]}


# --- wrong answers: the same verdict in the batch as in the notebook ----------------------------------------
HEADER = "import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"


def answer_cell(fn, name: str) -> str:
    """A learner's answer cell holding `fn`'s code, defined under the exercise's name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    tree.body[0].name = name
    return HEADER + ast.unparse(tree) + "\n"


def self_contained(fn) -> bool:
    """Uses nothing from its test module but the modules the answer cell imports."""
    used = set(fn.__code__.co_names) & set(fn.__globals__)
    return used <= {"math", "np", "torch", "F", "nn"}


def rounds(wrongs: list) -> list[dict]:
    """Submissions that each try one wrong implementation per exercise (the other exercises left as stubs)."""
    by_name: dict[str, list] = {}
    for fn, name in wrongs:
        by_name.setdefault(name, []).append(fn)
    return [{name: fns[k] for name, fns in by_name.items() if k < len(fns)}
            for k in range(max(map(len, by_name.values())))]


SAMPLES = {
    "01_tensors": [(fn, name) for fn, name, _ in test_lesson01_tensors.WRONG if self_contained(fn)],
    "07_training": [(getattr(test_lesson07_training, f), n) for f, n in [
        ("save_whole_objects", "save_checkpoint"), ("save_tutorial_keys", "save_checkpoint"),
        ("save_model_only", "save_checkpoint"), ("save_epoch_tensor", "save_checkpoint"),
        ("save_next_epoch", "save_checkpoint"), ("save_right", "save_checkpoint"),
        ("load_model_only", "load_checkpoint"), ("load_unsafe", "load_checkpoint"),
        ("load_rebinds_model", "load_checkpoint"), ("load_right", "load_checkpoint")]],
}


def verdict(status: str, points: int, cases: list) -> tuple:
    """What must agree: the status, the points, and which public cases failed."""
    return status, points, sorted(c["name"] for c in cases if not c["passed"] and not c["skipped"])


@pytest.mark.parametrize("lesson", sorted(SAMPLES))
def test_wrong_answers_get_the_notebooks_verdict(tmp_path, lesson):
    subs = rounds(SAMPLES[lesson])
    assert len(SAMPLES[lesson]) >= 10
    records = _grade(tmp_path, lesson, {
        f"round{k}": notebook(lesson, {name: answer_cell(fn, name) for name, fn in sub.items()}, correct=False)
        for k, sub in enumerate(subs)})
    for k, sub in enumerate(subs):
        graded = {ex["name"]: ex for ex in records[f"round{k}"]["exercises"]}
        for name, fn in sub.items():
            here = evaluate(fn, name)
            cases = [{"name": c.name, "passed": c.passed, "skipped": c.skipped} for c in here.cases]
            ex = graded[name]
            assert verdict(ex["status"], ex["points"], ex["cases"]) == verdict(here.status, here.points, cases), (
                f"{fn.__name__} as {name}:\nnotebook:\n{here.text()}\nbatch:\n{ex['message']}")
