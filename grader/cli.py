"""Command line: python -m grader build | list."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description="torchdojo's course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="generate lessons/*.ipynb and solutions/*.ipynb from solutions/*.py")
    b.add_argument("--check", action="store_true", help="only report out-of-date notebooks (exit 1 if any)")
    sub.add_parser("list", help="list every exercise with its points, difficulty and time estimate")
    args = parser.parse_args(argv)

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
