"""Command line: python -m grader build | list | grade | nbgrader-course."""
from __future__ import annotations

import argparse
import sys


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
                   help="a notebook (student id = file stem) or a folder [submitted/]<student>/<lesson>/*.ipynb")
    g.add_argument("--out", required=True, help="folder for grades.csv, <student>.json, feedback/")
    g.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: all cores)")
    g.add_argument("--gradescope", action="store_true", help="also write gradescope/<student>/results.json")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per exercise round (default 30)")
    g.add_argument("--memory-mb", type=int, default=2048, help="memory per sandbox beyond the start (2048)")
    g.add_argument("--hide", action="append", default=[], help="another folder the sandboxes must not see")
    n = sub.add_parser("nbgrader-course", help="export the course as an nbgrader course directory")
    n.add_argument("--out", required=True, help="the course directory to write")
    n.add_argument("--lesson", action="append", default=None, help="only this lesson (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "grade":
        from pathlib import Path

        from grader.grading.batch import grade
        from grader.grading.judge import Limits
        limits = Limits(timeout=args.timeout, memory_mb=args.memory_mb)
        records = grade(args.lesson, args.submissions, Path(args.out), workers=args.workers,
                        with_gradescope=args.gradescope, limits=limits, hide=args.hide,
                        log=lambda m: print(m, file=sys.stderr))
        for r in records:
            print(f"{r['student']:<24} {r['score']}/{r['max_score']}  {r['status']}")
        return 0
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
