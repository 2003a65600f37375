"""The Gradescope autograder: the zip holds what grading its lesson needs, and its run_autograder, run from the
unpacked zip as Gradescope would, leaves a valid results.json for right, wrong and missing submissions."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from adversarial.build import notebook, write
from grader import evaluate
from grader.grading.gradescope import datasets_for, write_autograder

WRONG = "def pick_device(prefer=None):\n    return torch.device('cpu')\n"
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Gradescope's /autograder: the zip for 00_setup (with a hidden seed) unpacked in source/."""
    base = tmp_path_factory.mktemp("gradescope")
    with zipfile.ZipFile(write_autograder("00_setup", base / "dist", hidden_seed=1234)) as z:
        z.extractall(base / "autograder" / "source")
    return base / "autograder"


def run_autograder(root, files: dict) -> tuple[dict, str]:
    """Put `files` (path -> notebook) in submission/, run run_autograder, return results.json and its stdout."""
    shutil.rmtree(root / "submission", ignore_errors=True)
    (root / "submission").mkdir()
    for name, nb in files.items():
        write(root / "submission" / name, nb)
    (root / "results" / "results.json").unlink(missing_ok=True)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "TORCHDOJO_PYTHON": sys.executable,
           "PYTHONPATH": str(root / "source" / "course")}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    # what Gradescope requires: a score (top level or per test), seconds, known visibilities
    assert isinstance(results["score"], (int, float)) and isinstance(results["execution_time"], int)
    assert results["visibility"] in VISIBILITY and results["stdout_visibility"] in VISIBILITY
    for test in results.get("tests", []):
        assert {"name", "score", "max_score", "output"} <= test.keys() and test["visibility"] in VISIBILITY
    return results, done.stdout


def test_the_zip_holds_the_scripts_and_only_what_grading_the_lesson_needs(root, tmp_path):
    dist = root.parent / "dist"
    assert [p.name for p in dist.iterdir()] == ["autograder-00_setup.zip"]
    with zipfile.ZipFile(dist / "autograder-00_setup.zip") as z:
        infos = {i.filename: i for i in z.infolist()}
        setup = z.read("setup.sh").decode()
    for script in ("setup.sh", "run_autograder"):
        assert infos[script].external_attr >> 16 & 0o777 == 0o755
    names = set(infos)
    assert {n for n in names if not n.startswith("course/")} == {"setup.sh", "run_autograder", "private/hidden_seed"}
    assert {"course/pyproject.toml", "course/README.md", "course/lessons/00_setup.ipynb",
            "course/grader/__main__.py", "course/grader/grading/batch.py"} <= names
    assert [n for n in names if n.startswith("course/lessons/")] == ["course/lessons/00_setup.ipynb"]
    assert all(n.endswith(".py") and "__pycache__" not in n for n in names if n.startswith("course/grader/"))
    assert not any(n.startswith(("course/datasets/", "course/solutions/", "course/tests/")) for n in names)
    assert (root / "source" / "private" / "hidden_seed").read_text() == "1234\n"
    # the CPU wheels are only suggested: every command installs from PyPI by name
    assert "pip install -e" in setup and all("index-url" not in ln or ln.lstrip().startswith("#")
                                               for ln in setup.splitlines())
    # lessons 06 and 07 read datasets/digits while grading, and nothing else from datasets/
    assert datasets_for("00_setup") == [] and datasets_for("06_data") == datasets_for("07_training") == ["digits"]
    with zipfile.ZipFile(write_autograder("07_training", tmp_path)) as z:
        sets = {n.split("/")[2] for n in z.namelist() if n.startswith("course/datasets/")}
        assert sets == {"digits", "README.md"} and "course/datasets/digits/train.csv" in z.namelist()
    with pytest.raises(ValueError, match="00_setup, 01_tensors"):
        write_autograder("99_nope", tmp_path)


def test_a_correct_notebook_gets_full_marks_from_the_unpacked_grader(root):
    results, stdout = run_autograder(root, {"alice smith.ipynb": notebook("00_setup")})
    # the grader that ran is the zip's copy, not the repository's
    assert f"grader: {root / 'source' / 'course' / 'grader' / '__init__.py'}\n" in stdout
    assert results["score"] == sum(t["max_score"] for t in results["tests"]) > 0
    assert all(t["status"] == "passed" for t in results["tests"])
    assert "Hidden cases use inputs drawn from the instructor's seed" in results["output"]  # the seed got there


def test_a_wrong_answer_gets_zero_with_the_checks_message(root):
    # of several notebooks, the one named like the lesson is graded
    results, _ = run_autograder(root, {"00_setup.ipynb": notebook("00_setup", {"pick_device": WRONG}),
                                       "drafts/scratch.ipynb": notebook("00_setup")})
    namespace = {}
    exec("import torch\n" + WRONG, namespace)
    assert results["score"] == 0
    assert results["tests"][0]["output"] == evaluate(namespace["pick_device"], "pick_device").text()
    assert "should raise ValueError" in results["output"]


@pytest.mark.parametrize("files", [{}, {"a.ipynb": notebook("00_setup"), "b.ipynb": notebook("00_setup")}],
                         ids=["no notebook", "two notebooks"])
def test_without_exactly_one_notebook_the_student_is_told_what_to_submit(root, files):
    results, _ = run_autograder(root, files)
    assert results["score"] == 0 and "Submit one notebook, 00_setup.ipynb" in results["output"]
