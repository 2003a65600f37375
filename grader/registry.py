"""The exercise registry: every exercise, keyed by its curriculum name, with its check and metadata."""
from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Exercise:
    name: str
    lesson: str                # "01_tensors"
    check: Callable            # check(t, obj): runs the cases through the Tester t
    points: int
    difficulty: int            # 1 (warm-up) .. 3 (hard)
    minutes: int               # time estimate for a learner
    hints: tuple[str, ...]
    forbidden: dict[str, str] = field(default_factory=dict)  # canonical torch name -> what to do instead
    budget_s: float = 0.3      # the check's median time budget on 2 CPU cores (training checks state more)
    time_limit_s: float = 0    # seconds the learner's code may take in one round (0: the grader's default)


_EXERCISES: dict[str, Exercise] = {}


def exercise(lesson: str, *, points: int, difficulty: int, minutes: int, hints: list[str],
             forbidden: dict[str, str] | None = None, budget_s: float = 0.3, time_limit_s: float = 0):
    """Register the decorated check function as the check of the exercise with the same name.

    `time_limit_s` is the one place a slow exercise (training) states how long the learner's code may run: its
    check enforces it in the notebook, and every grading path gives the round at least that long."""
    if not 1 <= difficulty <= 3:
        raise ValueError("difficulty is 1, 2 or 3")

    def register(check: Callable) -> Callable:
        name = check.__name__
        if name in _EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        _EXERCISES[name] = Exercise(name, lesson, check, points, difficulty, minutes, tuple(hints),
                                    dict(forbidden or {}), budget_s, time_limit_s)
        return check

    return register


@functools.cache
def _load_checks() -> None:
    """Import every check module once (a module imported earlier on its own registered only its part)."""
    from grader import checks
    for module in pkgutil.iter_modules(checks.__path__):
        importlib.import_module(f"grader.checks.{module.name}")


def exercises() -> dict[str, Exercise]:
    """All registered exercises by name, in lesson order and, within a lesson, in the notebook's order (a check
    module registers its exercises in the order the lesson checks them; tests/test_contract.py holds it to that)."""
    _load_checks()
    return dict(sorted(_EXERCISES.items(), key=lambda kv: kv[1].lesson))  # sorted() keeps a lesson's order


def lessons() -> list[str]:
    """Every lesson with exercises, in course order."""
    return sorted({ex.lesson for ex in exercises().values()})


def lesson(name: str) -> str:
    """`name` if it is a lesson, else a ValueError that lists the lessons."""
    known = lessons()
    if name not in known:
        import difflib
        close = [k for k in known if k.split("_")[0] == name] or difflib.get_close_matches(name, known, n=1)
        hint = f" — did you mean {close[0]}?" if close else "."
        raise ValueError(f"no lesson called {name!r}{hint} The lessons are: {', '.join(known)}")
    return name


def get(name: str) -> Exercise:
    """The exercise called `name`, or a KeyError that lists the close matches."""
    known = exercises()
    if name not in known:
        import difflib
        close = difflib.get_close_matches(name, known, n=3)
        extra = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no exercise called {name!r}.{extra} Pass name='...' if your object has another name.")
    return known[name]
