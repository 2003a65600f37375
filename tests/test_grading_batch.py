"""The batch grader as an instructor scripts it: exit codes, clear errors, every submission in the gradebook,
batches side by side, Ctrl-C, the isolation it reports, and time budgets that match the notebook's."""
import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from adversarial.build import notebook, solution_answers, write
from grader.build import ROOT
from grader.cli import main
from grader.grading import judge
from grader.grading.batch import grade
from grader.grading.judge import Limits

WRONG = "def pick_device(prefer=None):\n    return torch.device('cpu')\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="uid separation and namespaces need root")


def run_cli(*args, cwd=ROOT, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env, **kw)


def rows(out: Path) -> dict:
    return {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}


@pytest.mark.parametrize("args, fragment", [
    (["--lesson", "01_tensor", "{subs}"], "no lesson called '01_tensor' — did you mean 01_tensors?"),
    (["--lesson", "../solutions/01_tensors", "{subs}"], "The lessons are: 00_setup, 01_tensors"),
    (["--lesson", "00_setup", "{tmp}/missing.ipynb"], "missing.ipynb: no such file or folder"),
    (["--lesson", "00_setup", "{tmp}/empty"], "nothing to grade for 00_setup"),
    (["--lesson", "00_setup", "{subs}", "--workers", "0"], "--workers: must be a number above 0"),
    (["--lesson", "00_setup", "{subs}", "--timeout", "0"], "--timeout: must be a number above 0"),
    (["--lesson", "00_setup", "{subs}", "--timeout", "nan"], "--timeout: must be a number above 0, got nan"),
    (["--lesson", "00_setup", "{subs}", "--timeout", "soon"], "--timeout: 'soon' is not a number"),
    (["--lesson", "00_setup", "{subs}", "--memory-mb", "1e12"], "--memory-mb: '1e12' is not a whole number"),
    (["--lesson", "00_setup", "{subs}", "--hide", "{tmp}/nope"], "--hide"),
])
def test_usage_errors_exit_2_with_one_clear_line_and_grade_nothing(tmp_path, capsys, args, fragment):
    subs = write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup")).parent
    (tmp_path / "empty").mkdir()
    args = [a.format(subs=subs, tmp=tmp_path) for a in args]
    assert exit_code("grade", *args, "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()[-1]) > len(fragment), err
    assert not (tmp_path / "out" / "grades.csv").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    subs = write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup")).parent
    (tmp_path / "out.csv").write_text("")
    assert exit_code("grade", "--lesson", "00_setup", str(subs), "--out", str(tmp_path / "out.csv")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def exit_code(*argv) -> int:
    """`python -m grader ...` in this process (usage errors stop before anything is graded)."""
    try:
        return main(list(argv))
    except SystemExit as e:  # argparse's own errors
        return e.code


def test_every_submission_is_in_the_gradebook_with_why_and_the_exit_code_says_so(tmp_path):
    subs = tmp_path / "subs"
    write(subs / "ann.ipynb", notebook("00_setup"))
    write(subs / "ben.ipynb", b"{broken")
    write(subs / "cy.ipynb", {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    (subs / "dee.ipynb").mkdir()  # a folder that only looks like a notebook
    out = tmp_path / "out"
    done = run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(out))
    assert done.returncode == 1 and "3 of 4 submissions were not graded" in done.stderr, done.stderr
    got = {s: (r["status"], r["score"], r["source"]) for s, r in rows(out).items()}
    assert got == {"ann": ("graded", "1", str(subs / "ann.ipynb")), "ben": ("unreadable", "0", str(subs / "ben.ipynb")),
                   "cy": ("no_cells", "0", str(subs / "cy.ipynb")), "dee": ("unreadable", "0", str(subs / "dee.ipynb"))}
    cy = (out / "feedback" / "cy.txt").read_text()
    assert "Status: no_cells — the notebook has no cells" in cy
    ben = (out / "feedback" / "ben.txt").read_text()
    assert ben.count("not valid JSON") == 1, ben
    # results are readable like any other file the instructor makes (not 0600)
    for path in [out / "grades.csv", out / "ann.json", out / "feedback" / "ann.txt"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path
    # all graded: exit 0
    shutil.rmtree(subs)
    write(subs / "ann.ipynb", notebook("00_setup"))
    assert run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(tmp_path / "out2")).returncode == 0


def test_gradescope_results_are_written_for_results_graded_earlier_and_never_left_stale(tmp_path):
    subs = write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup")).parent
    out = tmp_path / "out"
    assert run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(out)).returncode == 0
    mtime = (out / "ann.json").stat().st_mtime_ns
    assert run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(out), "--gradescope").returncode == 0
    assert (out / "ann.json").stat().st_mtime_ns == mtime  # not regraded
    assert json.loads((out / "gradescope" / "ann" / "results.json").read_text())["score"] == 1
    write(subs / "ann.ipynb", notebook("00_setup", {"pick_device": WRONG}))  # resubmitted; graded without the flag
    assert run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(out)).returncode == 0
    assert json.loads((out / "gradescope" / "ann" / "results.json").read_text())["score"] == 0


def test_a_student_without_a_notebook_is_missing_and_the_others_are_graded(tmp_path):
    write(tmp_path / "submitted" / "ann" / "00_setup" / "00_setup.ipynb", notebook("00_setup"))
    (tmp_path / "submitted" / "cat" / "00_setup").mkdir(parents=True)
    records = {r["student"]: r for r in grade("00_setup", [str(tmp_path)], tmp_path / "out", log=lambda m: None)}
    assert records["ann"]["score"] == 1 and records["cat"]["status"] == "missing"
    assert "no notebook (.ipynb) was found in" in (tmp_path / "out" / "feedback" / "cat.txt").read_text()


def test_a_judge_that_dies_leaves_an_error_row_and_its_student_is_regraded_next_run(tmp_path, monkeypatch):
    subs = write(tmp_path / "subs" / "ben.ipynb", notebook("00_setup")).parent
    real = judge.grade_submission
    monkeypatch.setattr(judge, "grade_submission", lambda *args: os._exit(9))  # the judges are forked: they see it
    records = grade("00_setup", [str(subs)], tmp_path / "out", workers=1, log=lambda m: None)
    assert records[0]["status"] == "error" and "rerun" in records[0]["notes"][0]
    assert rows(tmp_path / "out")["ben"]["status"] == "error"
    monkeypatch.setattr(judge, "grade_submission", real)
    records = grade("00_setup", [str(subs)], tmp_path / "out", workers=1, log=lambda m: None)
    assert records[0]["status"] == "graded" and records[0]["score"] == 1


def slow_answers(seconds: float) -> dict:
    """pick_device solved, after its cell spends `seconds` of CPU time."""
    return {"pick_device": f"import time\n_end = time.process_time() + {seconds}\nwhile time.process_time() < _end:\n"
                           f"    pass\n\n{solution_answers('00_setup')['pick_device']}"}


@root_only
def test_two_batches_on_one_host_do_not_touch_each_others_sandboxes(tmp_path):
    procs = []
    for batch in ("a", "b"):
        for i in range(3):
            write(tmp_path / batch / f"{batch}{i}.ipynb", notebook("00_setup", slow_answers(1.5)))
        procs.append(subprocess.Popen([sys.executable, "-m", "grader", "grade", "--lesson", "00_setup",
                                       str(tmp_path / batch), "--out", str(tmp_path / f"out-{batch}"),
                                       "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    for batch in ("a", "b"):
        assert {s: r["score"] for s, r in rows(tmp_path / f"out-{batch}").items()} == \
            {f"{batch}{i}": "1" for i in range(3)}


@root_only
def test_uids_held_by_another_batch_are_skipped():
    mine, locks = judge.claim_uids(2)
    try:
        theirs, more = judge.claim_uids(2)
        assert not set(mine) & set(theirs)
        for fd in more:
            os.close(fd)
    finally:
        for fd in locks:
            os.close(fd)


def test_ctrl_c_stops_the_batch_at_once_and_keeps_what_is_done(tmp_path):
    subs = tmp_path / "subs"
    for i in range(6):
        write(subs / f"s{i}.ipynb", notebook("00_setup", slow_answers(3)))
    out = tmp_path / "out"
    # as from a terminal: Ctrl-C on, even where this suite runs as a background job (which ignores SIGINT, and so
    # would every process it starts)
    proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "--lesson", "00_setup", str(subs),
                             "--out", str(out), "--workers", "1"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    end = time.monotonic() + 300
    while time.monotonic() < end and not list(out.glob("s*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again" in err, err
    # one Ctrl-C was enough: the batch stopped before the rest (5 more slow submissions) were graded
    assert 0 < len(list(out.glob("s*.json"))) < 6 and not list(out.glob("*.tmp"))


@root_only
def test_the_isolation_is_reported_and_can_be_required(tmp_path):
    subs = write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup")).parent
    done = run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(tmp_path / "out"), "--require-isolation")
    assert done.returncode == 0, done.stderr
    assert "isolation: separate uid yes · no network yes · hidden folders yes · private /tmp yes" in done.stderr
    # a default Docker container has no CAP_SYS_ADMIN: no namespaces, so submissions could read solutions/
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    done = subprocess.run([setpriv, "--bounding-set", "-sys_admin", sys.executable, "-m", "grader", "grade",
                           "--lesson", "00_setup", str(subs), "--out", str(tmp_path / "out2"), "--require-isolation"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "refusing to grade without full isolation" in done.stderr
    assert "submissions can read" in done.stderr and str(ROOT / "solutions") in done.stderr
    assert "CAP_SYS_ADMIN" in done.stderr
    done = subprocess.run([setpriv, "--bounding-set", "-sys_admin", sys.executable, "-m", "grader", "grade",
                           "--lesson", "00_setup", str(subs), "--out", str(tmp_path / "out3")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "WARNING: submissions can reach the network" in done.stderr, done.stderr


@root_only
def test_a_course_under_tmp_still_gets_a_private_tmp(tmp_path):
    """Everything the sandbox needs (here the grader itself) may live under /tmp: it is laid back into the
    sandbox's private /tmp instead of leaving /tmp shared."""
    course = tmp_path / "course"
    for part in ("grader", "lessons", "datasets", "pyproject.toml"):
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(ROOT / part, course / part)
    subs = write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup")).parent
    env = dict(os.environ, PYTHONPATH=str(course))
    done = run_cli("grade", "--lesson", "00_setup", str(subs), "--out", str(tmp_path / "out"),
                   "--require-isolation", cwd=course, env=env)
    assert done.returncode == 0, done.stderr
    assert "private /tmp yes" in done.stderr and rows(tmp_path / "out")["ann"]["score"] == "1"


def test_training_gets_the_time_its_check_allows_whatever_the_default_timeout(tmp_path):
    """train_digits_classifier may take up to its time_limit_s in the notebook; a --timeout below that must
    not fail it in the batch."""
    slow = (solution_answers("07_training")["train_digits_classifier"] + "\n_solved = train_digits_classifier\n\n"
            "def train_digits_classifier():\n    import time\n    end = time.process_time() + 4\n"
            "    while time.process_time() < end:\n        pass\n    return _solved()\n")
    write(tmp_path / "subs" / "ann.ipynb", notebook("07_training", {"train_digits_classifier": slow}))
    before = leftovers()
    records = grade("07_training", [str(tmp_path / "subs")], tmp_path / "out", workers=1,
                    limits=Limits(timeout=2), log=lambda m: None)
    ex = {e["name"]: e for e in records[0]["exercises"]}["train_digits_classifier"]
    assert ex["status"] == "passed", ex["message"]
    # the lesson's teaching cells write TensorBoard logs: into the batch's own folder, removed with it
    assert not leftovers() - before


def leftovers() -> set[str]:
    """What a batch of this process could leave in /tmp (another process's batch may come and go meanwhile)."""
    return {p.name for p in Path(tempfile.gettempdir()).iterdir()
            if p.name.startswith(("tb-digits-", f"torchdojo-grading-{os.getpid()}-", "sandbox-"))}
