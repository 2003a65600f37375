"""The check API used wrongly: one clear line that says what to do, nothing run, nothing recorded."""
import functools

import pytest
import torch

from grader import check, evaluate, hint, progress, store
from test_lesson00_setup import pick_device_other


def spy(name: str, calls: list):
    """A learner's function called `name` that notes each call: proves that a misused check ran nothing."""
    def learner(*args, **kwargs):
        calls.append(args)
    learner.__name__ = name
    return learner


class MLP(torch.nn.Module):  # the learner's class, for the exercise that wants one
    def forward(self, x):
        raise AssertionError("a misused check must not run the learner's code")


def pick_devise(prefer=None):  # a misspelled exercise name
    return torch.device("cpu")


def softmax(x):  # the right function passed under another exercise's name
    return x.softmax(-1)


def timed(fn):  # a decorator written without functools.wraps: the function now calls itself "wrapper"
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


MISUSES = [
    (lambda: check("pick_device"), TypeError, "takes the function or class itself, not its name: check(pick_device)"),
    (lambda: evaluate("pick_device"), TypeError, "not its name: evaluate(pick_device)"),
    (lambda: check("pick_devise"), TypeError, "not its name: check(pick_device)"),
    (lambda: check(), TypeError, "needs the function or class of an exercise"),
    (lambda: check(None, name="pick_device"), TypeError, "e.g. check(pick_device)"),
    (lambda: check(torch.ones(3).softmax(-1)), TypeError, "not what calling it returned"),
    (lambda: check(torch.device("cpu"), name="pick_device"), TypeError, "check(pick_device(...))) — it got a device"),
    (lambda: check(MLP()), TypeError, "takes the class MLP itself, not an object made from it: check(MLP)"),
    (lambda: check(MLP(), name="MLP"), TypeError, "check(MLP)"),
    (lambda: check(softmax, name="log_softmax"), TypeError, "softmax is the exercise softmax, not log_softmax"),
    (lambda: check(lambda x: x), TypeError, "a lambda has no exercise name"),
    (lambda: check(pick_devise, name=1), TypeError, "name= takes the exercise's name as a string"),
    (lambda: hint(None), TypeError, "e.g. hint(softmax)"),
    (lambda: check(pick_devise), KeyError,
     "no exercise called 'pick_devise' — did you mean pick_device? Rename your pick_devise to pick_device"),
    (lambda: evaluate(pick_devise), KeyError, "no exercise called 'pick_devise' — did you mean pick_device?"),
    (lambda: check(pick_devise, name="pick_devic"), KeyError, "did you mean pick_device? Pass name='pick_device'"),
    (lambda: check(pick_devise, name="typo"), KeyError, "no exercise called 'typo' — progress() lists every"),
    (lambda: hint("pick_devise"), KeyError, 'did you mean pick_device? hint("pick_device") shows its hints'),
    (lambda: check(functools.partial(softmax), name="pick_device"), TypeError,
     "softmax is the exercise softmax, not pick_device"),
    (lambda: check(torch.nn.Linear), TypeError, "that is PyTorch's own torch.nn.modules.linear.Linear, not your "
                                                "answer"),
    (lambda: check(torch.nn.functional.softmax), TypeError, "PyTorch's own"),
    (lambda: check("pick_device", pick_devise), TypeError, "the arguments are the other way round: check(pick_device)"),
    (lambda: check(MLP.forward), TypeError, "that is a method of MLP: check the class itself, check(MLP)"),
    (lambda: check(timed(pick_devise)), KeyError, "if it is your answer to an exercise, say which: check(wrapper, "
                                                  "name='...')"),
    (lambda: progress("00_setup", "4"), ValueError, "no lesson called '4'"),
    (lambda: progress("04"), ValueError, "no lesson called '04' — did you mean 04_losses? The lessons are: "
                                         "00_setup, 01_tensors,"),
]


@pytest.mark.parametrize("misuse, kind, says", MISUSES)
def test_a_misuse_says_what_to_do_and_never_turns_a_pass_into_a_fail(misuse, kind, says, capsys):
    for name in ("pick_device", "log_softmax", "MLP"):
        store.update(name, status="passed")
    before = store.load()
    with pytest.raises(kind) as caught:
        misuse()
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert capsys.readouterr().out == ""  # no report: no case ran
    assert store.load() == before


def test_a_misuse_runs_none_of_the_learners_code():
    calls = []
    for own, name in [("softmax", "log_softmax"), ("pick_devise", None), ("<lambda>", None), ("x", "typo")]:
        with pytest.raises((TypeError, KeyError)):
            check(spy(own, calls), name=name)
    assert calls == [] and store.load() == {}


def test_the_right_calls_still_work(capsys):
    check(pick_device_other, name="pick_device")
    assert store.load()["pick_device"]["status"] == "passed"
    hint("pick_device")  # a name is fine for hint: the reports suggest hint("name")
    hint(pick_devise, name="pick_device")
    assert "Hint 2 of" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="did not pass"):
        check(pick_devise, name="pick_device")  # a name of the learner's own: name= says which exercise
    assert store.load()["pick_device"]["status"] == "failed"
    capsys.readouterr()
    progress("00_setup")  # shows what went wrong first, as the check recorded it
    problem = store.load()["pick_device"]["problem"]
    assert problem and f"      {problem}" in capsys.readouterr().out
    assert evaluate(softmax).status == "failed"  # its own name: softmax is checked as softmax
    report = evaluate(MLP)  # a class exercise takes the class: its cases run
    assert report.status == "failed" and "MLP.__init__()" in report.text(), report.text()


def test_a_misuse_shows_as_one_line_in_ipython_and_still_fails_the_cell(capsys):
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from grader import check, hint, progress")
        for cell, first in [('check("pick_device")', "WrongObject: check() takes the function or class itself"),
                            ("def pick_devise(prefer=None): pass\ncheck(pick_devise)",
                             "UnknownExercise: no exercise called 'pick_devise' — did you mean pick_device?"),
                            ('progress("04")', "UnknownLesson: no lesson called '04'")]:
            capsys.readouterr()
            result = shell.run_cell(cell)
            out = capsys.readouterr().out
            assert out.startswith(first) and out.count("\n") == 1, out  # no traceback through the grader
            assert isinstance(result.error_in_exec, (TypeError, KeyError, ValueError))  # an error: nbgrader scores 0
    finally:
        InteractiveShell.clear_instance()
