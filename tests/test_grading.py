"""The batch grader: the wire format, picking answer cells, the outputs, and resuming after kill -9."""
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from adversarial.build import notebook, write
from grader import evaluate
from grader.build import ROOT
from grader.grading import wire
from grader.grading.batch import UsageError, find_submissions, grade
from grader.grading.submission import Lesson

WRONG = "def pick_device(prefer=None):\n    return torch.device('cpu')\n"


# --- the wire -----------------------------------------------------------------------------------------------
def roundtrip(value, **kw):
    a, b = socket.socketpair()
    wire.send(a, wire.encode(value, **kw))
    return wire.decode(wire.recv(b, time.monotonic() + 5))


def test_plain_values_cross_unchanged():
    value = {"out": torch.arange(6.0).reshape(2, 3).t(), "n": 3, "f": 0.5, "s": "x", "none": None,
             "t": (torch.device("cpu"), torch.float64, torch.Size([2, 3]), [1, (2, 3)]), 4: True, "c": 1j}
    got = roundtrip(value)
    assert torch.equal(got["out"], value["out"]) and got["out"].stride() == (1, 3)
    assert {k: v for k, v in got.items() if k != "out"} == {k: v for k, v in value.items() if k != "out"}
    meta = roundtrip(torch.empty(2, 3, device="meta", requires_grad=True))
    assert meta.device.type == "meta" and meta.shape == (2, 3) and meta.requires_grad


def test_learner_objects_arrive_as_their_type_name_only():
    import numpy as np

    class Sneaky(torch.Tensor):
        pass

    class AlwaysEqual:
        def __eq__(self, other):
            return True

    got = roundtrip([np.zeros(3), torch.zeros(2).as_subclass(Sneaky), AlwaysEqual(), torch.nn.Parameter(torch.ones(1))])
    assert [type(x).__name__ for x in got] == ["ndarray", "Sneaky", "AlwaysEqual", "Parameter"]
    assert isinstance(got[1], torch.Tensor) and type(got[1]) is not torch.Tensor
    assert not (got[2] == got[2]) or type(got[2]).__eq__ is object.__eq__


def test_what_checks_compare_crosses_with_its_type():
    import collections
    from collections import UserDict

    import numpy as np

    class BatchEncoding(UserDict):  # what a tokenizer returns: a mapping, not a dict
        pass

    Pair = collections.namedtuple("Pair", "first second")
    model = torch.nn.Linear(2, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    got = roundtrip({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "pair": Pair(1, (2, [3])),
                     "max": torch.arange(6.0).reshape(2, 3).max(dim=1), "f": np.float64(0.5),
                     "enc": BatchEncoding(input_ids=torch.ones(2, 3, dtype=torch.long))})
    assert type(got["model"]) is collections.OrderedDict and list(got["model"]) == ["weight", "bias"]
    assert set(got["optimizer"]) == {"state", "param_groups"} and list(got["optimizer"]["state"]) == [0, 1]
    assert got["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert got["pair"].second == (2, [3]) and type(got["pair"]).__name__ == "Pair"
    assert type(got["max"]) is torch.return_types.max and torch.equal(got["max"].indices, torch.tensor([2, 2]))
    assert isinstance(got["f"], float) and type(got["f"]).__name__ == "float64" and got["f"] == 0.5
    assert isinstance(got["enc"], dict) and type(got["enc"]).__name__ == "BatchEncoding"
    assert got["enc"].input_ids.dtype == torch.long and got["enc"]["input_ids"].shape == (2, 3)
    assert type(roundtrip(model.state_dict(), strict=True)) is collections.OrderedDict  # the judge's arguments too
    # what cannot cross says why, instead of arriving as something else
    odd = roundtrip({"ok": 1, "bad": {(0, 1): torch.ones(1)}})
    assert wire.unsendable(odd) == "a dict whose keys are not all str or int"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hostile pickle below is meant to be odd
def test_the_judge_never_resolves_references_or_reads_oversized_frames():
    with pytest.raises(wire.WireError):
        wire.decode({wire.TAG: "ref", "mod": "os", "qual": "system"})
    a, b = socket.socketpair()
    a.sendall((wire.MAX_FRAME + 1).to_bytes(8, "big"))
    with pytest.raises(wire.WireError, match="over the limit"):
        wire.recv(b, time.monotonic() + 5)
    buf = io.BytesIO()
    import pickle
    pickle.dump(os.system, buf)  # a pickle that would call a function: refused by weights_only loading
    a.sendall(len(buf.getvalue()).to_bytes(8, "big") + buf.getvalue())
    with pytest.raises(wire.WireError, match="unreadable"):
        wire.recv(b, time.monotonic() + 5)


# --- answer cells --------------------------------------------------------------------------------------------
def test_answers_by_id_then_by_definition_else_the_stub():
    lesson = Lesson.load("00_setup")
    nb = notebook("00_setup", {"pick_device": WRONG}, correct=False)
    answers, status, problem = lesson.answers(json.dumps(nb).encode())
    assert (status, problem) == ("graded", "") and answers[0].source == WRONG and answers[0].found == "id"
    for cell in nb["cells"]:
        cell.pop("id"), cell.pop("metadata")
    answers, _, _ = lesson.answers(json.dumps(nb).encode())
    assert answers[0].found == "definition" and answers[0].source == WRONG
    nb["cells"] = [c for c in nb["cells"] if "def pick_device" not in "".join(c["source"])]
    answers, _, _ = lesson.answers(json.dumps(nb).encode())
    assert answers[0].found == "missing" and "NotImplementedError" in answers[0].source
    _, status, problem = lesson.answers(b"{not json")
    assert status == "unreadable" and "not valid JSON" in problem
    _, status, problem = lesson.answers(json.dumps({**nb, "cells": []}).encode())
    assert status == "no_cells" and "has no cells" in problem and "00_setup.ipynb" in problem


def test_nbgrader_layout_and_file_stems_name_the_students(tmp_path):
    write(tmp_path / "submitted" / "ann" / "00_setup" / "00_setup.ipynb", notebook("00_setup"))
    write(tmp_path / "submitted" / "ben" / "00_setup" / "whatever.ipynb", notebook("00_setup"))
    write(tmp_path / "loose" / "cy d.ipynb", notebook("00_setup"))
    found = find_submissions([str(tmp_path), str(tmp_path / "loose" / "cy d.ipynb")], "00_setup")
    assert [s for s, _ in found] == ["ann", "ben", "cy_d"]
    # a shell glob over nbgrader's layout, and one student's own folder, name the students too
    globbed = sorted(str(p) for p in tmp_path.glob("submitted/*/00_setup/*.ipynb"))
    assert [s for s, _ in find_submissions(globbed, "00_setup")] == ["ann", "ben"]
    assert [s for s, _ in find_submissions([str(tmp_path / "submitted" / "ben")], "00_setup")] == ["ben"]


def test_each_student_is_graded_once_on_the_same_notebook_however_the_paths_are_given(tmp_path):
    sub = tmp_path / "submitted"
    for student, names in [("amy", ["00_setup", "scratch"]), ("ben", ["00_setup (copy)", "00_setup"]),
                           ("cat", ["my work"])]:
        for name in names:
            write(sub / student / "00_setup" / f"{name}.ipynb", notebook("00_setup"))
    (sub / "dan" / "00_setup").mkdir(parents=True)  # an empty submission folder
    folder = find_submissions([str(sub)], "00_setup")
    globbed = find_submissions(sorted(str(p) for p in sub.glob("*/00_setup/*.ipynb")) + [str(sub / "dan")], "00_setup")
    assert folder == globbed
    assert [(s, p.name) for s, p in folder] == [("amy", "00_setup.ipynb"), ("ben", "00_setup.ipynb"),
                                                ("cat", "my work.ipynb"), ("dan", "00_setup")]
    # the same file twice counts once; ids keep letters of any script, and who gets "-2" does not depend on order
    loose = [write(tmp_path / d / f"{n}.ipynb", notebook("00_setup")) for d, n in
             [("x", "José"), ("y", "Josñ"), ("x", "sam"), ("y", "sam"), ("z", "sam-2"), ("x", "Zoë 学生")]]
    a = find_submissions([str(p) for p in loose] + [str(loose[0])], "00_setup")
    b = find_submissions([str(p) for p in reversed(loose)], "00_setup")
    assert set(a) == set(b) and len(a) == 6
    assert {s: str(p.relative_to(tmp_path)) for s, p in a} == {
        "José": "x/José.ipynb", "Josñ": "y/Josñ.ipynb", "sam": "x/sam.ipynb", "sam-3": "y/sam.ipynb",
        "sam-2": "z/sam-2.ipynb", "Zoë_学生": "x/Zoë 学生.ipynb"}


def test_paths_with_nothing_to_grade_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "other" / "ann" / "01_tensors" / "01_tensors.ipynb", notebook("00_setup"))
    for path, fragment in [(tmp_path / "nope", "no such file or folder"), (tmp_path / "empty", "nothing to grade"),
                           (tmp_path / "other", "nothing to grade for 00_setup")]:
        with pytest.raises(UsageError, match=fragment):
            find_submissions([str(path)], "00_setup")


# --- the command ---------------------------------------------------------------------------------------------
def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kw)


def test_grade_command_writes_gradebook_json_feedback_and_gradescope(tmp_path):
    subs = tmp_path / "subs"
    write(subs / "alice.ipynb", notebook("00_setup"))
    write(subs / "bob.ipynb", notebook("00_setup", correct=False))
    write(subs / "carol.ipynb", notebook("00_setup", {"pick_device": WRONG}))
    write(tmp_path / "course" / "submitted" / "dave" / "00_setup" / "00_setup.ipynb", notebook("00_setup"))
    out = tmp_path / "out"
    done = run_cli("grade", "--lesson", "00_setup", str(subs / "alice.ipynb"), str(subs / "bob.ipynb"),
                   str(subs / "carol.ipynb"), str(tmp_path / "course"), "--out", str(out), "--gradescope")
    assert done.returncode == 0, done.stderr
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert {s: (r["score"], r["max_score"], r["status"], r["pick_device"]) for s, r in rows.items()} == {
        "alice": ("1", "1", "graded", "1"), "bob": ("0", "1", "graded", "0"),
        "carol": ("0", "1", "graded", "0"), "dave": ("1", "1", "graded", "1")}
    bob = json.loads((out / "bob.json").read_text())
    assert bob["exercises"][0]["status"] == "not_attempted"
    carol = json.loads((out / "carol.json").read_text())
    namespace = {}
    exec("import torch\n" + WRONG, namespace)
    # the sandboxed verdict reads exactly like the learner's own check in a notebook
    assert carol["exercises"][0]["message"] == evaluate(namespace["pick_device"], "pick_device").text()
    assert "should raise ValueError" in (out / "feedback" / "carol.txt").read_text()
    gs = json.loads((out / "gradescope" / "alice" / "results.json").read_text())
    assert gs["score"] == 1 and gs["tests"][0]["status"] == "passed" and gs["tests"][0]["max_score"] == 1


def test_a_killed_batch_resumes_without_regrading(tmp_path):
    subs = tmp_path / "subs"
    for i in range(6):
        write(subs / f"s{i}.ipynb", notebook("00_setup", None if i % 2 else {"pick_device": WRONG}))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "--lesson", "00_setup", str(subs),
                             "--out", str(out), "--workers", "1"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 300
    while time.monotonic() < end and not list(out.glob("s*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the grader, its judges and the zygote's process group
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("s*.json")}
    assert finished and not list(out.glob("*.tmp")), "nothing finished before the kill, or a torn write"
    logged = []
    records = grade("00_setup", [str(subs)], out, workers=1, log=logged.append)
    assert f"grading {6 - len(finished)} submission(s) of 00_setup ({len(finished)} already graded)" in logged \
        or len(finished) == 6
    assert all(out.joinpath(name).stat().st_mtime_ns == t for name, t in finished.items())
    assert {r["student"]: r["score"] for r in records} == {f"s{i}": i % 2 for i in range(6)}
