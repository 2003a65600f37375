"""The class report on a real batch: 30 submissions of 01_tensors with planted mistakes at known counts, graded
once by the batch grader with a hidden seed; the report must name the planted mistakes with their counts, the pass
rates, who did not attempt what and who is stuck, render in headless Chromium, and show no hidden case's text."""
import inspect
import json
import os
import shutil
from pathlib import Path

import pytest

import test_lesson01_tensors as wrong
from adversarial.build import notebook, write
from grader import class_report, evaluate
from grader.build import ROOT
from grader.class_report import HIDDEN_ONLY
from grader.cli import main
from grader.grading.batch import grade
from grader.report import mistake_of
from grader.runner import HIDDEN_SEED_ENV

LESSON = "01_tensors"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTEFACT = ROOT / "test-artifacts" / "class-report.png"

# Passes every public case, then meets an n beyond its table in the hidden round: its error quotes that n.
CAUSAL_TABLE = '''def causal_mask(n, device=None):
    if n > 11:
        raise KeyError(f"SECRET-TABLE-MISS n={n}")
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
'''


def as_answer(fn, name: str) -> str:
    """A wrong implementation from the lesson's tests, renamed to the exercise it answers."""
    return inspect.getsource(fn).replace(f"def {fn.__name__}(", f"def {name}(", 1)


def stub(name: str) -> str:
    return f"def {name}(*args, **kwargs):\n    raise NotImplementedError()\n"


# student index range -> the answers planted there (the rest of the notebook is solved)
PLANTED = [
    (range(5, 13), {"pairwise_sq_dists": as_answer(wrong.sq_dists_not_squared, "pairwise_sq_dists")}),
    (range(13, 17), {"pairwise_sq_dists": as_answer(wrong.sq_dists_cdist, "pairwise_sq_dists")}),
    (range(5, 10), {"one_hot": as_answer(wrong.one_hot_cpu_zeros, "one_hot")}),
    (range(17, 23), {"causal_mask": as_answer(wrong.causal_mask_inverted, "causal_mask")}),
    (range(23, 25), {"causal_mask": as_answer(wrong.causal_mask_transposed, "causal_mask")}),
    (range(25, 28), {"causal_mask": CAUSAL_TABLE}),
    (range(20, 23), {"broadcast_shape": stub("broadcast_shape")}),
]
BLANK = range(28, 30)  # handed in the untouched stub notebook


def student(i: int) -> str:
    return f"s{i:02d}"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The batch's grades folder (one lesson batch inside a class folder, as an instructor keeps them)."""
    tmp = tmp_path_factory.mktemp("class")
    subs = tmp / "subs"
    for i in range(30):
        answers = {}
        for where, planted in PLANTED:
            if i in where:
                answers.update(planted)
        write(subs / f"{student(i)}.ipynb", notebook(LESSON, answers, correct=i not in BLANK))
    out = tmp / "grades" / LESSON
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HIDDEN_SEED_ENV, "4242")
        records = grade(LESSON, [str(subs)], out, workers=2, log=lambda m: None)
    assert len(records) == 30 and all(r["status"] == "graded" for r in records)
    return tmp / "grades"


@pytest.fixture(scope="module")
def report(graded):
    return class_report(graded)


def test_every_failed_case_in_the_json_carries_its_mistake(graded):
    record = json.loads((graded / LESSON / "s05.json").read_text())
    cases = {ex["name"]: ex["cases"] for ex in record["exercises"]}
    failed = [c for c in cases["pairwise_sq_dists"] if not c["passed"] and not c["skipped"]]
    assert failed and all(c["mistake"]["code"] == mistake_of(c["message"])[0] for c in failed)
    assert "drop the sqrt" in failed[0]["mistake"]["label"]
    in_notebook = evaluate(wrong.sq_dists_not_squared, name="pairwise_sq_dists").cases  # same codes on both paths
    assert {c["mistake"]["code"] for c in failed} == {c.mistake for c in in_notebook if not c.passed and not c.skipped}
    assert all(c["mistake"] is None for c in cases["broadcast_shape"])  # passed
    assert {c["mistake"]["code"] for c in cases["one_hot"] if not c["passed"] and not c["skipped"]} == {"wrong-device"}
    hidden = [c for ex in json.loads((graded / LESSON / "s25.json").read_text())["exercises"]
              for c in ex["cases"] if c["hidden"] and not c["passed"] and not c["skipped"]]
    assert hidden and all(c["mistake"]["code"] and c["mistake"]["label"] == "" for c in hidden)


def test_the_planted_mistakes_are_the_top_ones_with_their_counts(report):
    lesson = report.lesson(LESSON)
    ex = {e.name: e for e in lesson.exercises}
    top = ex["pairwise_sq_dists"].mistakes
    assert [m.students for m in top] == [8, 4]
    assert "drop the sqrt" in top[0].label and "<n>" in top[0].label  # values masked: one group for 8 students
    assert "which this exercise forbids" in top[1].label and "`cdist`" in top[1].example
    assert [(m.code, m.students) for m in ex["one_hot"].mistakes] == [("wrong-device", 5)]
    causal = ex["causal_mask"].mistakes
    assert [m.students for m in causal] == [6, 6, 3, 2]  # tril() keeps the diagonal too: two diagnoses each
    assert any("the mask is inverted" in m.label for m in causal[:2]) and "transposed" in causal[3].label
    assert causal[2].label == "" and causal[2].example == ""  # seen only on hidden cases
    assert all(not e.mistakes for n, e in ex.items() if n not in ("pairwise_sq_dists", "one_hot", "causal_mask"))


def test_pass_rates_and_not_attempted(report):
    counts = {e.name: (e.passed, e.failed, e.not_attempted) for e in report.lesson(LESSON).exercises}
    assert counts == {"broadcast_shape": (25, 0, 5), "pairwise_sq_dists": (16, 12, 2), "batched_matmul": (28, 0, 2),
                      "gather_rows": (28, 0, 2), "one_hot": (23, 5, 2), "causal_mask": (17, 11, 2),
                      "normalize": (28, 0, 2)}


def test_stuck_students_are_those_not_past_the_first_exercises(report):
    stuck = {s.student: (s.exercise, s.why) for s in report.lesson(LESSON).stuck}
    expected = {student(i) for i in [*range(5, 17), *range(20, 23), *BLANK]}
    assert set(stuck) == expected
    assert stuck["s28"] == ("broadcast_shape", "not attempted") and stuck["s21"][0] == "broadcast_shape"
    assert stuck["s06"][0] == "pairwise_sq_dists" and "drop the sqrt" in stuck["s06"][1]
    assert report.lesson(LESSON).stuck[0].score == 0  # the emptiest first


def test_cli_writes_one_self_contained_page_without_hidden_text(graded, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(graded), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page.replace("http-equiv", "")
    assert "SECRET-TABLE-MISS" not in page and "KeyError" not in page and "hidden case" not in page
    assert HIDDEN_ONLY in page
    # the JSON the report read holds no hidden text either (the judge redacted it)
    assert not any("SECRET" in p.read_text() for p in (graded / LESSON).glob("*.json"))


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing", "no such folder"),
    (lambda d: d, "no grading results"),
    (lambda d: (d / "b").mkdir() or (d / "b" / "ann.json").write_text("{oops") and d, "corrupt JSON"),
])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, make, fragment):
    folder = make(tmp_path)
    assert main(["report", str(folder), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and not (tmp_path / "r.html").exists()


def test_notebook_form_renders_html(report):
    html = report._repr_html_()
    assert "<table class='exercises'>" in html and "causal_mask" in html and "<img" in html


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="Debian's chromium is not installed (bash dojo test installs it)")
def test_report_renders_in_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright
    path = report.save(tmp_path / "report.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(path.as_uri())
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])")
            assert len(images) == 2 and all(ok and w > 100 and h > 100 for ok, w, h, _ in images), images
            rows = page.eval_on_selector_all("table.exercises tr", "rs => rs.map(r => r.innerText)")
            assert len(rows) == 8 and any(r.startswith("pairwise_sq_dists\t53%\t16\t12\t2") for r in rows), rows
            top = page.eval_on_selector("table.mistakes[data-exercise='pairwise_sq_dists'] tr:nth-child(2)",
                                        "r => r.innerText")
            assert top.startswith("8\t") and "drop the sqrt" in top
            assert page.eval_on_selector_all("table.stuck tr", "rs => rs.length") == 1 + 17
            assert "SECRET-TABLE-MISS" not in page.inner_text("body")
            ARTEFACT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTEFACT), full_page=True)
        finally:
            browser.close()
    assert ARTEFACT.stat().st_size > 10_000
