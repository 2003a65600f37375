"""The check API: evaluate (a Report), check (for notebook cells), hint and progress."""
from __future__ import annotations

import difflib
import functools
import inspect
import sys

from grader import store
from grader.grading.outputs import exercise_entry
from grader.progress_report import NoWorkspace, format_progress, problem_of, workspace_progress
from grader.registry import Exercise, exercises, lesson as known_lesson, lessons as all_lessons
from grader.report import Report
from grader.runner import run_exercise


class GraderError(Exception):
    """An error whose message says what to do: IPython shows it as one line, without the grader's frames."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError's own str() would quote the message


class CheckFailed(GraderError, AssertionError):
    """Raised by check() when the exercise did not pass."""


class WrongObject(GraderError, TypeError):
    """check/evaluate/hint got something other than an exercise's function or class: nothing ran or was recorded."""


class UnknownExercise(GraderError, KeyError):
    """No exercise has that name (a misspelling): nothing ran or was recorded."""


class UnknownLesson(GraderError, ValueError):
    """No lesson has that name."""


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)  # still an error output: Run All stops, nbgrader scores 0
    return stb


def _quiet_tracebacks_in_ipython() -> None:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    if shell is not None and GraderError not in shell.custom_exceptions:
        shell.set_custom_exc((GraderError,), _short_traceback)


def _fail(error: GraderError) -> GraderError:
    """`error`, made to show as one line in IPython."""
    _quiet_tracebacks_in_ipython()
    return error


def _lookup(name: str, call: str, own: bool = False) -> Exercise:
    """The exercise called `name`, or an UnknownExercise that suggests the closest name. `own`: the name is the
    one the learner's function or class was defined with."""
    known = exercises()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if own and name == "<lambda>":
        raise _fail(WrongObject(f"a lambda has no exercise name: say which exercise it is, e.g. "
                                f"{call}(f, name='softmax')"))
    if not close:
        guess = (f"if it is your answer to an exercise, say which: {call}({name}, name='...'); progress() lists every "
                 "exercise" if own else "progress() lists every exercise")
    elif own:
        guess = (f"did you mean {close[0]}? Rename your {name} to {close[0]} (and run its cell again), or say which "
                 f"exercise it is: {call}({name}, name='{close[0]}')")
    elif call == "hint":
        guess = f'did you mean {close[0]}? hint("{close[0]}") shows its hints'
    else:
        guess = f"did you mean {close[0]}? Pass name='{close[0]}'"
    raise _fail(UnknownExercise(f"no exercise called {name!r} — {guess}"))


def _is_function_or_class(obj) -> bool:
    return isinstance(obj, type) or inspect.isroutine(obj) or isinstance(obj, functools.partial)


def _exercise(obj, name: str | None, call: str) -> Exercise:
    """The exercise that `call`(obj, name) is about, or a one-line error on a misuse, raised before anything
    runs or is recorded (so a misuse never turns a passed exercise into a failed one)."""
    if isinstance(obj, str) and _is_function_or_class(name):
        raise _fail(WrongObject(f"the arguments are the other way round: {call}({obj}), the function or class "
                                "itself, is enough"))
    if name is not None and not isinstance(name, str):
        raise _fail(WrongObject(f"name= takes the exercise's name as a string, e.g. {call}(f, name='softmax')"))
    if isinstance(obj, str) and call == "hint" and name is None:
        return _lookup(obj, call)  # hint("softmax") is fine: the reports suggest it
    example = name or (obj if isinstance(obj, str) else "softmax")
    if example not in exercises():
        example = (difflib.get_close_matches(example, exercises(), n=1) or ["softmax"])[0]
    if isinstance(obj, str):
        raise _fail(WrongObject(f"{call}() takes the function or class itself, not its name: {call}({example})"))
    if obj is None:
        raise _fail(WrongObject(f"{call}() needs the function or class of an exercise, e.g. {call}({example})"))
    if not _is_function_or_class(obj):
        cls = type(obj).__name__
        if cls == name or (name is None and cls in exercises()):
            raise _fail(WrongObject(f"{call}() takes the class {cls} itself, not an object made from it: "
                                    f"{call}({cls})"))
        raise _fail(WrongObject(f"{call}() takes the function or class itself, e.g. {call}({example}), not what "
                                f"calling it returned ({call}({example}(...))) — it got a {cls}"))
    if (getattr(obj, "__module__", None) or "").split(".")[0] in ("torch", "torchvision"):
        what = getattr(obj, "__qualname__", type(obj).__name__)
        raise _fail(WrongObject(f"that is PyTorch's own {obj.__module__}.{what}, not your answer — run the "
                                "exercise's cell that defines yours, then check it"))
    own = getattr(obj, "__name__", None) or getattr(getattr(obj, "func", None), "__name__", None)  # a partial's too
    owner, _, method = getattr(obj, "__qualname__", "").partition(".")
    if own not in exercises() and owner in exercises() and method == own:
        raise _fail(WrongObject(f"that is a method of {owner}: check the class itself, {call}({owner})"))
    if name is None:
        if not isinstance(own, str):
            raise _fail(WrongObject(f"this {type(obj).__name__} has no name: say which exercise it is, e.g. "
                                    f"{call}(f, name='softmax')"))
        return _lookup(own, call, own=True)
    exercise = _lookup(name, call)
    if own != name and own in exercises():
        raise _fail(WrongObject(f"{own} is the exercise {own}, not {name}: {call}({own}) checks it, and "
                                f"{call}({name}) checks {name}"))
    return exercise


def evaluate(obj=None, name: str | None = None) -> Report:
    """Run the exercise's cases against `obj` and return a Report, without printing or raising (a misuse such as
    evaluate("softmax") raises WrongObject or UnknownExercise before anything runs)."""
    __tracebackhide__ = True  # pytest hides this frame from the traceback
    return run_exercise(_exercise(obj, name, "evaluate"), obj)


def check(obj=None, name: str | None = None) -> None:
    """Check an exercise in a notebook: print a short report; raise AssertionError unless it passed."""
    __tracebackhide__ = True
    report = run_exercise(_exercise(obj, name, "check"), obj)
    print(report.text())
    store.update(report.name, status=report.status, problem=problem_of(exercise_entry(report)))
    _quiet_tracebacks_in_ipython()
    if report.status == "not_attempted":
        raise CheckFailed(f"{report.name} is not attempted yet")
    if not report.passed:
        raise CheckFailed(f"{report.name} did not pass — see the report above")


def hint(obj=None, name: str | None = None) -> None:
    """Print the next hint for an exercise (one more each call): hint(softmax) or hint("softmax")."""
    __tracebackhide__ = True
    exercise = _exercise(obj, name, "hint")
    seen = store.load().get(exercise.name, {}).get("hints_seen", 0)
    k = min(seen, len(exercise.hints) - 1)
    last = " (that is the last hint)" if k == len(exercise.hints) - 1 else f' — call hint again for hint {k + 2}'
    print(f"Hint {k + 1} of {len(exercise.hints)} for {exercise.name}{last}:\n  {exercise.hints[k]}")
    store.update(exercise.name, hints_seen=k + 1)


def progress(*lessons: str, grade: bool = False) -> None:
    """Print each exercise (of the lessons named, or all) in notebook order with its status and points, and what to
    do next: as the checks recorded them, or with grade=True as the grader grades the saved workspace notebooks."""
    __tracebackhide__ = True
    try:
        asked = {known_lesson(str(name)) for name in lessons}
    except ValueError as e:
        raise _fail(UnknownLesson(str(e)))
    names = [name for name in all_lessons() if name in asked or not asked]  # in course order
    if not grade:
        from grader.workspace import workspace_dir
        grading = " (progress(grade=True) grades your saved workspace notebooks instead)"
        print(f"What your checks recorded{grading if workspace_dir().is_dir() else ''}.\n")
        print(format_progress(names, store.load()))
        return
    try:
        print(workspace_progress(names))
    except NoWorkspace as e:
        print(e)
