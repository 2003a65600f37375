"""Grade one batch (N submissions of a lesson, right and wrong mixed) with our grader and with nbgrader.

    python benchmarks/grading.py [--lesson 01_tensors] [--n 20] [--skip-nbgrader]

Prints both wall times, their ratio, and our per-submission overhead (a submission's grading time minus the
time its checks take in-process, i.e. what the sandboxing adds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from adversarial.build import notebook, solution_answers  # noqa: E402


def make_batch(lesson: str, n: int) -> list[dict]:
    """n notebooks: every third one solved, every third a stub, the rest with one exercise wrong."""
    names = list(solution_answers(lesson))
    books = []
    for i in range(n):
        if i % 3 == 0:
            books.append(notebook(lesson))
        elif i % 3 == 1:
            books.append(notebook(lesson, correct=False))
        else:
            wrong = names[i % len(names)]
            books.append(notebook(lesson, {wrong: solution_answers(lesson)[wrong].replace("return", "return 0 *", 1)}))
    return books


def ours(lesson: str, books: list[dict], work: Path, workers: int) -> float:
    subs = work / "ours"
    for i, nb in enumerate(books):
        (subs / f"s{i:02d}.ipynb").parent.mkdir(parents=True, exist_ok=True)
        (subs / f"s{i:02d}.ipynb").write_text(json.dumps(nb))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "grade", "--lesson", lesson, str(subs), "--out",
                    str(work / "ours-out"), "--workers", str(workers)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def nbgrader(lesson: str, books: list[dict], work: Path) -> float:
    from grader.grading.nbgrader_course import export
    course = work / "course"
    export(course, [lesson])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TORCHDOJO_HOME=str(work / "home"))
    nbg = [str(Path(sys.executable).parent / "nbgrader")]
    subprocess.run(nbg + ["generate_assignment", lesson, "--force"], cwd=course, env=env, check=True,
                   capture_output=True)
    for i, nb in enumerate(books):
        dest = course / "submitted" / f"s{i:02d}" / lesson / f"{lesson}.ipynb"
        dest.parent.mkdir(parents=True)
        dest.write_text(json.dumps(nb))
    t0 = time.perf_counter()
    subprocess.run(nbg + ["autograde", lesson, "--force"], cwd=course, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def overhead(lesson: str, work: Path) -> tuple[float, float]:
    """(median seconds per submission in our grader, median seconds of the same checks in-process)."""
    from grader import evaluate
    from grader.grading.submission import Lesson
    records = [json.loads(p.read_text()) for p in (work / "ours-out").glob("s*.json")]
    solved = [r["seconds"] for r in records if r["score"] == r["max_score"]]
    ns = {}
    exec("import torch\n" + "\n".join(solution_answers(lesson).values()), ns)
    local = []
    for _ in range(3):
        t0 = time.perf_counter()
        for name in Lesson.load(lesson).exercises:
            evaluate(ns[name], name)
        local.append(time.perf_counter() - t0)
    return statistics.median(solved), statistics.median(local)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lesson", default="01_tensors")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--skip-nbgrader", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="torchdojo-bench-"))
    try:
        books = make_batch(args.lesson, args.n)
        t_ours = ours(args.lesson, books, work, args.workers)
        print(f"ours:     {args.n} submissions of {args.lesson} in {t_ours:.1f} s "
              f"({args.workers} workers, start-up included)")
        per, local = overhead(args.lesson, work)
        print(f"          a solved submission: {per:.2f} s in the sandbox vs {local:.2f} s of the same checks "
              f"in-process → overhead {per - local:.2f} s")
        if not args.skip_nbgrader:
            t_nbg = nbgrader(args.lesson, books, work)
            print(f"nbgrader: {args.n} submissions in {t_nbg:.1f} s (autograde)")
            print(f"ratio:    ours is {t_nbg / t_ours:.1f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
