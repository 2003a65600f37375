"""Progress through the course: what the checks recorded, or a fresh grade of the learner's saved workspace notebooks.

Both print through `format_progress`. Grading reuses the batch grader (its sandbox, its checks, its cache), so the
verdicts are a class grader's; nothing here imports it (or nbgrader) until a grade is asked for, so the
`progress()` cell also works where only the lessons' own dependencies are installed (Colab).
"""
from __future__ import annotations

import sys
from pathlib import Path

from grader.registry import exercises, lesson as known_lesson, lessons as all_lessons

MARKS = {"passed": "✓", "failed": "✗", "not_attempted": "○"}
UPDATE = "run `python -m grader update` to add it"


class NoWorkspace(Exception):
    """The learner's workspace does not exist yet."""


def problem_of(entry: dict) -> str:
    """The first line of what went wrong in a graded exercise (an outputs.exercise_entry): its first failed case
    and that case's first message line, else the report's own first line; "" when nothing went wrong."""
    if entry["status"] != "failed":
        return ""
    for case in entry["cases"]:
        if not case["passed"] and not case["skipped"]:
            first = (case["message"].splitlines() or [""])[0]
            return f"{case['name']}: {first}" if first else case["name"]
    # no failed case: the check stopped before any (Report.text heads with "✗ name: why · points")
    head = entry["message"].splitlines()[0].removeprefix(f"{MARKS['failed']} {entry['name']}: ")
    return head.rpartition(" · ")[0] or head


def format_progress(names: list[str], entries: dict[str, dict], folder: Path | None = None,
                    problems: dict[str, str] | None = None, notes: dict[str, list[str]] | None = None) -> str:
    """The progress report of lessons `names`: each exercise in notebook order with ✓/✗/○, points and, when it
    failed, why; lesson and course totals; then what to do next. `entries` maps an exercise to {"status",
    "problem"} (missing: not attempted); `problems` says why a lesson has no grades; `folder` holds the
    notebooks (None: the learner's own, wherever they run them)."""
    problems, notes = problems or {}, notes or {}
    by_lesson = {name: [ex for ex in exercises().values() if ex.lesson == name] for name in names}
    lines, earned, total, passed, count, todo = [], 0, 0, 0, 0, None
    for name, lesson_exercises in by_lesson.items():
        got = {ex.name: entries.get(ex.name, {}).get("status", "not_attempted") for ex in lesson_exercises}
        points = sum(ex.points for ex in lesson_exercises if got[ex.name] == "passed")
        most = sum(ex.points for ex in lesson_exercises)
        earned, total, count = earned + points, total + most, count + len(lesson_exercises)
        passed += sum(status == "passed" for status in got.values())
        if name in problems:
            lines += [f"{name} · {points}/{most} points", f"  {problems[name]}"]
            todo = todo or (name, None, "")
            continue
        lines.append(f"{name} · {points}/{most} points")
        for ex in lesson_exercises:
            status = got[ex.name]
            lines.append(f"  {MARKS[status]} {ex.name:<32} {ex.points if status == 'passed' else 0}/{ex.points}"
                         f"  {'★' * ex.difficulty:<3} ~{ex.minutes} min")
            problem = entries.get(ex.name, {}).get("problem", "")
            if status == "failed" and problem:
                lines.append(f"      {problem}")
            if status != "passed":
                todo = todo or (name, ex.name, status)
        lines += [f"  note: {note}" for note in notes.get(name, [])]
    scope = "Course" if names == all_lessons() else "Total"
    lines += ["", f"{scope}: {earned}/{total} points · {passed} of {count} exercises passed",
              _next(todo, folder, problems)]
    return "\n".join(lines)


def _next(todo: tuple[str, str | None, str] | None, folder: Path | None, problems: dict[str, str]) -> str:
    """What to do next: the first exercise not passed, in course order."""
    if todo is None:
        return "Next: nothing — every exercise here passed. Well done!"
    lesson, name, status = todo
    if name is None:
        return f"Next: {lesson} — {problems[lesson]}"
    notebook = folder / f"{lesson}.ipynb" if folder else f"{lesson}.ipynb"
    edit = ("fix" if status == "failed" else "write") + f" {name}"
    how = ("correct its answer cell" if status == "failed"
           else "replace the `raise NotImplementedError` in its answer cell with your code")
    return (f"Next: {edit} — open {notebook}, {how}, run that cell and then its check cell, check({name}). "
            f'Stuck? hint("{name}") shows one hint at a time.')


def grade_workspace(names: list[str], folder: Path, say=print) -> tuple[dict[str, dict], dict[str, str],
                                                                          dict[str, list[str]]]:
    """Grade the saved notebooks folder/NN_topic.ipynb of lessons `names` with the batch grader; returns the
    exercises' entries, why a lesson could not be graded, and the grader's notes per lesson."""
    from grader.grading.batch import UsageError, grade
    from grader.grading.submission import Lesson
    from grader.workspace import copies_of
    entries, problems, notes = {}, {}, {}
    for name in names:
        path = folder / f"{name}.ipynb"
        if not path.exists():
            copies = copies_of(name, folder)
            problems[name] = (f"{path.name} is not in your workspace, but {copies[0].name} holds your copy of it — "
                              f"rename it back to {path.name} to have it graded" if copies else
                              f"{path.name} is not in your workspace — {UPDATE}")
            continue
        notes[name] = [f"{c.name} is your copy of this lesson under another name: only {path.name} is graded"
                       for c in copies_of(name, folder)]
        lesson = Lesson.load(name)
        try:
            answers, status, why = lesson.answers(path.read_bytes())
        except OSError as e:
            answers, status, why = [], "unreadable", f"{path} could not be read: {e.strerror}"
        if why:
            problems[name] = _cannot_grade(path, status, why)
            continue
        # Every answer cell still the lesson's own stub (or absent, which grades as the stub): all not attempted,
        # which is what grading would say, so nothing is run.
        if all(a.source.strip() == lesson.stubs[a.name].strip() for a in answers):
            continue
        say(f"grading {path.name} …")
        try:
            [record] = grade(name, [str(path)], folder / ".torchdojo" / "grades" / name, workers=1,
                             log=lambda message: None)
        except UsageError as e:
            problems[name] = _cannot_grade(path, "error", str(e))
            continue
        if record["status"] != "graded":
            problems[name] = _cannot_grade(path, record["status"], record["notes"][0])
            continue
        entries.update({ex["name"]: {"status": ex["status"], "problem": problem_of(ex)} for ex in record["exercises"]})
        notes[name] += record["notes"]
    return entries, problems, notes


def _cannot_grade(path: Path, status: str, why: str) -> str:
    """Why a notebook could not be graded, and what to do about it."""
    if status == "error":  # the grader's own failure, never cached
        todo = "run the same command again; if it keeps failing, report it with this message"
    else:
        todo = (f"open it in JupyterLab to see what is wrong, or move it out of the folder and {UPDATE} back as a "
                "fresh copy of the lesson")
    return f"could not be graded ({status}): {why} — {todo}"


def workspace_progress(names: list[str], say=print) -> str:
    """Grade the saved workspace notebooks of lessons `names` and return the progress report (NoWorkspace when
    there is no workspace yet)."""
    from grader.workspace import workspace_dir
    folder = workspace_dir()
    if not folder.is_dir():
        raise NoWorkspace(f"no workspace at {folder} yet — run `python -m grader update` to create it")
    entries, problems, notes = grade_workspace(names, folder, say)
    return (f"Grades of the saved notebooks in {folder} (edits not saved yet are not seen: save them first).\n\n"
            + format_progress(names, entries, folder, problems, notes))


def progress_command(args) -> int:
    """`python -m grader progress [LESSON ...]`: grade the workspace and print the progress report."""
    try:
        asked = {known_lesson(name) for name in args.lessons}
    except ValueError as e:
        print(f"python -m grader progress: error: {e}", file=sys.stderr)
        return 2
    names = [name for name in all_lessons() if name in asked or not asked]  # in course order
    try:
        print(workspace_progress(names, say=lambda message: print(message, file=sys.stderr, flush=True)))
    except NoWorkspace as e:
        print(f"python -m grader progress: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the lessons graded so far are kept and not graded again; run the same command again",
              file=sys.stderr)
        return 130
    return 0
