"""Command line: python -m grader build | list | update | progress | grade | report | nbgrader-course |
gradescope-autograder.

`grade` exits 0 when every submission was graded, 1 when some were not (their status in grades.csv says why:
`missing`, `unreadable`, `no_cells`, `error`), 2 on a usage error (nothing graded) and 130 when interrupted (rerun the
same command to resume).
"""
from __future__ import annotations

import argparse
import math
import sys

from grader.grading.judge import DEFAULT_TIMEOUT


def _positive(kind):
    """An argparse type: a finite number (of `kind`) above 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole' if kind is int else 'a'} number") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description="torchdojo's course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="generate lessons/*.ipynb and solutions/*.ipynb from solutions/*.py")
    b.add_argument("--check", action="store_true", help="only report out-of-date notebooks (exit 1 if any)")
    sub.add_parser("list", help="list every exercise with its points, difficulty and time estimate")
    g = sub.add_parser("grade", help="grade submitted notebooks of one lesson, each in its own sandbox")
    g.add_argument("--lesson", required=True, help="the lesson graded, e.g. 01_tensors (never read from a "
                   "submission)")
    g.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="a notebook (student id: the folder above <lesson>/, else the file stem) or a folder "
                   "[submitted/]<student>/<lesson>/*.ipynb")
    g.add_argument("--out", required=True, help="folder for grades.csv, <student>.json, feedback/")
    g.add_argument("--workers", type=_positive(int), default=None,
                   help="submissions graded at once (default: all cores)")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="grade on the workers of this Dask scheduler instead of this machine's cores (--workers "
                   "is then ignored); every worker must run the same course commit")
    g.add_argument("--gradescope", action="store_true", help="also write gradescope/<student>/results.json")
    g.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT,
                   help=f"seconds per exercise round (default {DEFAULT_TIMEOUT:g}); exercises that state a "
                   "longer limit of their own (training) get that")
    g.add_argument("--memory-mb", type=_positive(int), default=2048,
                   help="memory per sandbox beyond the start (2048)")
    g.add_argument("--hide", action="append", default=[], help="another folder the sandboxes must not see")
    g.add_argument("--require-isolation", action="store_true",
                   help="refuse to grade unless every protection is active (separate uid, no network, hidden "
                   "folders, private /tmp: root with CAP_SYS_ADMIN)")
    n = sub.add_parser("nbgrader-course", help="export the course as an nbgrader course directory")
    n.add_argument("--out", required=True, help="the course directory to write")
    n.add_argument("--lesson", action="append", default=None, help="only this lesson (repeatable)")
    ga = sub.add_parser("gradescope-autograder", help="write a Gradescope autograder (a zip) for one lesson")
    ga.add_argument("--lesson", required=True, help="the lesson it grades, e.g. 01_tensors")
    ga.add_argument("--out", required=True, help="folder for autograder-<lesson>.zip")
    ga.add_argument("--hidden-seed", type=int, default=None, help="also grade on hidden cases drawn from this seed")
    sub.add_parser("update", help="create the learner's workspace ($TORCHDOJO_WORKSPACE, else workspace/) or "
                   "bring it up to date with the course, keeping every answer")
    r = sub.add_parser("report", help="a class report (HTML): pass rates, the most common mistakes, stuck students")
    r.add_argument("grades_dir", metavar="GRADES_DIR", help="the --out folder of `grade`, or a folder of such folders "
                   "(one per lesson batch)")
    r.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    p = sub.add_parser("progress", help="grade the notebooks in the learner's workspace and say what to do next")
    p.add_argument("lessons", nargs="*", metavar="LESSON", help="only these lessons (default: all)")
    args = parser.parse_args(argv)

    if args.command == "update":
        from grader.workspace import update_command
        return update_command(args)
    if args.command == "report":
        from grader.class_report import report_command
        return report_command(args)
    if args.command == "progress":
        from grader.progress_report import progress_command
        return progress_command(args)

    if args.command == "gradescope-autograder":
        from pathlib import Path

        from grader.grading.gradescope import write_autograder
        try:
            path = write_autograder(args.lesson, Path(args.out), hidden_seed=args.hidden_seed)
        except ValueError as e:  # an unknown lesson: the message lists the lessons
            parser.error(str(e))
        print(f"wrote {path}: upload it on the assignment's Configure Autograder page")
        return 0

    if args.command == "grade":
        return _grade(args)
    if args.command == "nbgrader-course":
        from pathlib import Path

        from grader.grading.nbgrader_course import export
        for path in export(Path(args.out), args.lesson):
            print(f"wrote {path}")
        return 0

    if args.command == "build":
        from grader.build import ROOT, build_all
        stale = build_all(check_only=args.check)
        for path in stale:
            print(("out of date: " if args.check else "wrote ") + str(path.relative_to(ROOT)))
        if args.check and stale:
            print("run `python -m grader build` and commit the result", file=sys.stderr)
            return 1
        return 0
    if args.command == "list":
        from grader.registry import exercises
        for ex in exercises().values():
            print(f"{ex.lesson:<16} {ex.name:<28} {ex.points} pt  difficulty {ex.difficulty}  ~{ex.minutes} min")
    return 0


def _grade(args) -> int:
    from pathlib import Path

    from grader.grading.batch import UsageError, grade
    from grader.grading.judge import Limits
    limits = Limits(timeout=args.timeout, memory_mb=args.memory_mb)
    try:
        records = grade(args.lesson, args.submissions, Path(args.out), workers=args.workers,
                        with_gradescope=args.gradescope, limits=limits, hide=args.hide,
                        require_isolation=args.require_isolation, scheduler=args.scheduler,
                        log=lambda m: print(m, file=sys.stderr))
    except UsageError as e:
        print(f"python -m grader grade: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the submissions graded so far are saved; run the same command again to grade the "
              "rest", file=sys.stderr)
        return 130
    for r in records:
        print(f"{r['student']:<24} {r['score']}/{r['max_score']}  {r['status']}")
    failed = [r for r in records if r["status"] != "graded"]
    if failed:
        print(f"{len(failed)} of {len(records)} submissions were not graded (see the status column of "
              f"{Path(args.out) / 'grades.csv'} and their feedback files)", file=sys.stderr)
    return 1 if failed else 0
