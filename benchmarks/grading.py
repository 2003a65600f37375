"""Grade one batch (N submissions of a lesson, right and wrong mixed) with our grader and with nbgrader.

    python benchmarks/grading.py [--lesson 01_tensors] [--n 20] [--skip-nbgrader] [--dask] [--cores 32]

Prints both wall times, their ratio, and our per-submission overhead (a submission's grading time minus the
time its checks take in-process, i.e. what the sandboxing adds). With --dask: the same batch on 1 and 2 local
workers and on a 2-worker Dask cluster on this machine, what Dask adds per submission, and a projection of a
5,000 learners x 13 lessons regrade onto N machines of --cores cores.
"""
from __future__ import annotations

import argparse
import contextlib
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


def ours(lesson: str, books: list[dict], work: Path, workers: int, out: str = "ours-out", *more: str) -> float:
    subs = work / "ours"
    for i, nb in enumerate(books):
        (subs / f"s{i:02d}.ipynb").parent.mkdir(parents=True, exist_ok=True)
        (subs / f"s{i:02d}.ipynb").write_text(json.dumps(nb))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "grade", "--lesson", lesson, str(subs), "--out",
                    str(work / out), "--workers", str(workers), *more], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


@contextlib.contextmanager
def dask_cluster(work: Path, workers: int):
    """A `dask scheduler` and `workers` single-threaded `dask worker`s on this machine; yields its address."""
    dask = str(Path(sys.executable).parent / "dask")
    file = work / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        while not file.exists():
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(workers)]
        from distributed import Client
        with Client(address) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def distributed_row(lesson: str, books: list[dict], work: Path) -> tuple[float, float, float]:
    """The batch on 1 local worker, 2 local workers and a 2-worker Dask cluster (started beforehand, its
    workers warm from a first batch, as a cluster that stays up is). Returns (core-seconds per submission,
    core-seconds Dask adds per submission, seconds a worker takes to start grading a lesson)."""
    n = len(books)
    t1 = ours(lesson, books, work, 1, "local-1")
    t2 = ours(lesson, books, work, 2, "local-2")
    with dask_cluster(work, 2) as address:
        cold = ours(lesson, books, work, 2, "dask-cold", "--scheduler", address)
        warm = ours(lesson, books, work, 2, "dask-warm", "--scheduler", address)
    print(f"distributed: {n} submissions of {lesson}: 1 local worker {t1:.1f} s · 2 local workers {t2:.1f} s · "
          f"2 Dask workers {warm:.1f} s ({cold:.1f} s with the workers' first start)")
    per = statistics.mean(seconds(work / "local-1"))  # the judge's time per submission: one core's
    extra = max(0.0, 2 * warm / n - statistics.mean(seconds(work / "dask-warm")))
    print(f"             a submission: {per:.2f} core-s locally; Dask adds at most {extra:.2f} core-s to it "
          f"(a warm batch's worker time per submission minus its grading, the client's start included)")
    return per, extra, cold - warm


def seconds(out: Path) -> list[float]:
    return [json.loads(p.read_text())["seconds"] for p in out.glob("s*.json")]


def projection(per_submission: float, dask_overhead: float, startup: float, cores: int,
               learners: int = 5000, lessons: int = 13) -> None:
    """Print how long a regrade of every lesson of every learner would take on N machines of `cores` cores,
    from the measured core-seconds per submission and what Dask adds to each."""
    total = learners * lessons
    print(f"projection: {learners:,} x {lessons} = {total:,} submissions at {per_submission:.2f} core-s each "
          f"+ {dask_overhead:.2f} core-s Dask, {cores} cores per machine, {startup:.0f} s to start each lesson")
    print("  machines   hours")
    for machines in (1, 2, 4, 8, 16, 32, 64):
        seconds = lessons * startup + total * (per_submission + dask_overhead) / (machines * cores)
        print(f"  {machines:>8}   {seconds / 3600:5.2f}")


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
    p.add_argument("--dask", action="store_true", help="the distributed row and the projection (needs Dask)")
    p.add_argument("--cores", type=int, default=32, help="cores per machine in the projection (32)")
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
        if args.dask:
            per, extra, startup = distributed_row(args.lesson, books, work)
            projection(per, extra, startup, args.cores)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
