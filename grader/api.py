"""The check API: evaluate (a Report), check (for notebook cells), hint and progress."""
from __future__ import annotations

import sys

from grader import store
from grader.registry import exercises, get
from grader.report import Report
from grader.runner import run_exercise


def _name_of(obj, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(obj, str):
        return obj
    found = getattr(obj, "__name__", None)
    if found is None:
        raise TypeError("pass the function or class itself, e.g. check(softmax), or give name='...'")
    return found


def evaluate(obj, name: str | None = None) -> Report:
    """Run the exercise's cases against `obj` and return a Report, without printing or raising."""
    return run_exercise(get(_name_of(obj, name)), obj)


class CheckFailed(AssertionError):
    """Raised by check(); in IPython it shows as one line under the report instead of a traceback."""


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)  # still an error output: Run All stops, nbgrader scores 0
    return stb


def _quiet_tracebacks_in_ipython() -> None:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    if shell is not None and CheckFailed not in shell.custom_exceptions:
        shell.set_custom_exc((CheckFailed,), _short_traceback)


def check(obj, name: str | None = None) -> None:
    """Check an exercise in a notebook: print a short report; raise AssertionError unless it passed."""
    __tracebackhide__ = True  # pytest hides this frame from the traceback
    report = evaluate(obj, name)
    print(report.text())
    store.update(report.name, status=report.status)
    _quiet_tracebacks_in_ipython()
    if report.status == "not_attempted":
        raise CheckFailed(f"{report.name} is not attempted yet")
    if not report.passed:
        raise CheckFailed(f"{report.name} did not pass — see the report above")


def hint(obj, name: str | None = None) -> None:
    """Print the next hint for an exercise (one more each call)."""
    exercise = get(_name_of(obj, name))
    seen = store.load().get(exercise.name, {}).get("hints_seen", 0)
    k = min(seen, len(exercise.hints) - 1)
    last = " (that is the last hint)" if k == len(exercise.hints) - 1 else f' — call hint again for hint {k + 2}'
    print(f"Hint {k + 1} of {len(exercise.hints)} for {exercise.name}{last}:\n  {exercise.hints[k]}")
    store.update(exercise.name, hints_seen=k + 1)


def progress(lesson: str | None = None) -> None:
    """Print every exercise (of one lesson, or all) with its latest status and points."""
    saved = store.load()
    marks = {"passed": "✓", "failed": "✗", "not_attempted": "○"}
    total = earned = 0
    current = None
    for ex in exercises().values():
        if lesson and ex.lesson != lesson:
            continue
        if ex.lesson != current:
            current = ex.lesson
            print(f"\n{current}")
        status = saved.get(ex.name, {}).get("status", "not_attempted")
        total += ex.points
        earned += ex.points if status == "passed" else 0
        print(f"  {marks[status]} {ex.name:<28} {ex.points if status == 'passed' else 0}/{ex.points} points"
              f"  ({'★' * ex.difficulty}, ~{ex.minutes} min)")
    print(f"\n{earned}/{total} points")
