"""A batch: find the submissions, skip those already graded, grade the rest on N judges, write the gradebook.

    main process ── starts ──> zygote (fresh interpreter, scrubbed env; forks one sandbox per submission)
         └─ forks N judges (trusted: run the checks, hold the hidden seed; one socket each to the zygote)
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.build import ROOT
from grader.grading import outputs
from grader.grading.judge import Limits
from grader.grading.submission import Lesson
from grader.runner import HIDDEN_SEED_ENV

SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


def find_submissions(paths: list[str], lesson: str) -> list[tuple[str, Path]]:
    """(student, notebook) pairs: a notebook file is one student (its stem); a folder is nbgrader's layout
    [submitted/]<student>/<lesson>/*.ipynb, or a folder of notebooks."""
    found: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            base = p / "submitted" if (p / "submitted").is_dir() else p
            nested = sorted(d for d in base.iterdir() if d.is_dir() and (d / lesson).is_dir())
            for d in nested:
                books = sorted((d / lesson).glob("*.ipynb"))
                preferred = [b for b in books if b.stem == lesson]
                found.append((d.name, (preferred or books or [d / lesson / f"{lesson}.ipynb"])[0]))
            if not nested:
                found += [(b.stem, b) for b in sorted(base.glob("*.ipynb"))]
        else:
            found.append((p.stem, p))
    out, seen = [], set()
    for student, path in found:
        sid = SAFE_ID.sub("_", student) or "student"
        k, unique = 2, sid
        while unique in seen:
            unique, k = f"{sid}-{k}", k + 1
        seen.add(unique)
        out.append((unique, path))
    return out


def grader_version(lesson: Lesson) -> str:
    """Changes whenever the grader's core, the lesson or its checks change: cached results are then regraded."""
    import inspect

    from grader.registry import get
    files = set((ROOT / "grader").glob("*.py")) | set((ROOT / "grader" / "grading").glob("*.py"))
    files |= {Path(inspect.getfile(get(n).check)) for n in lesson.exercises}
    h = hashlib.sha256(lesson.digest.encode())
    for f in sorted(files):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def hidden_seed() -> int | None:
    value = os.environ.get(HIDDEN_SEED_ENV, "").strip()
    return int(value) if value else None


def cache_key(digest: str, lesson: str, version: str, seed: int | None, limits: Limits) -> str:
    text = f"{digest}|{lesson}|{version}|{seed}|{limits.timeout}|{limits.memory_mb}"
    return hashlib.sha256(text.encode()).hexdigest()


def hide_list(out: Path, submissions: list[tuple[str, Path]], extra: list[str]) -> list[str]:
    """Folders the sandbox must not see: solutions, tests, outputs, every submission's folder — except any
    that holds what the sandbox itself needs (the interpreter, the grader)."""
    needed = [Path(p) for p in needed_paths()]
    wanted = {ROOT / "solutions", ROOT / "tests", ROOT / ".git", out, Path.home()} | {p.parent for _, p in submissions}
    wanted |= {Path(e) for e in extra}
    hide = []
    for d in sorted({w.resolve() for w in wanted if w.exists()}):
        if any(n == d or d in n.parents for n in needed):
            continue
        hide.append(str(d))
    return hide


def needed_paths() -> list[str]:
    """What the sandbox must still see: the interpreter, its standard library and packages, the grader."""
    import sysconfig
    paths = {sys.prefix, sys.base_prefix, str(ROOT / "grader"), str(Path(__import__("torch").__file__).parent)}
    paths |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return sorted(str(Path(p).resolve()) for p in paths)


def _sandbox_env(home: str) -> dict[str, str]:
    """The zygote's whole environment: nothing from ours but what Python and torch need."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TORCHDOJO_HOME": home,
           "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    for name in ("CUDA_VISIBLE_DEVICES", "TORCHDOJO_DEVICES"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _judge(slot: int, zsock: socket.socket, lesson: Lesson, limits: Limits, seed: int | None, out: Path,
           with_gradescope: bool, tasks, results) -> None:
    """A judge process: grade submissions from `tasks` until it is empty."""
    from grader.grading.judge import grade_submission
    from grader.grading.sandbox import PR_SET_PDEATHSIG, _prctl
    import torch
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    torch.set_num_threads(1)
    ready = json.loads(zsock.recv(1 << 20) or b"{}")
    zygote_notes = ready.get("notes", [])
    max_score = sum(__import__("grader.registry").registry.get(n).points for n in lesson.exercises)
    while True:
        task = tasks.get()
        if task is None:
            return
        student, source, data, key = task
        results.put(("start", slot, student))
        t0 = time.monotonic()
        answers, problem = lesson.answers(data)
        status, notes = ("unreadable" if problem else "graded"), ([problem] if problem else [])
        try:
            if problem:
                from grader.report import Report
                reports = [Report(n, "failed", __import__("grader.registry").registry.get(n).points,
                                  error=f"not graded: {problem}") for n in lesson.exercises]
            else:
                reports, more = grade_submission(zsock, slot, limits, lesson, answers, seed)
                notes += more
        except Exception as e:  # the grader's own failure: reported, not cached, regraded on the next run
            from grader.report import Report
            status = "error"
            notes.append(f"grading failed: {type(e).__name__}: {e}")
            reports = [Report(n, "failed", __import__("grader.registry").registry.get(n).points,
                              error="not graded (grader error)") for n in lesson.exercises]
        record = outputs.result_record(student, lesson.name, source, key, status, reports, notes, max_score,
                                       time.monotonic() - t0)
        if zygote_notes:
            record["lesson_notes"] = zygote_notes
        outputs.write_student(out, record, with_gradescope)
        results.put(("done", slot, student))


def grade(lesson_name: str, paths: list[str], out: Path, workers: int | None = None,
          with_gradescope: bool = False, limits: Limits | None = None, hide: list[str] | None = None,
          log=print) -> list[dict]:
    """Grade every submission of `paths` against lesson `lesson_name`; write everything under `out`."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lesson = Lesson.load(lesson_name)
    limits = limits or Limits()
    version, seed = grader_version(lesson), hidden_seed()
    submissions = find_submissions(paths, lesson_name)
    limits.hide = hide_list(out, submissions, hide or [])
    limits.needed = needed_paths()
    todo, records = [], {}
    for student, path in submissions:
        try:
            data = path.read_bytes()
        except OSError as e:
            data = b""
            log(f"{student}: cannot read {path}: {e}")
        key = cache_key(hashlib.sha256(data).hexdigest(), lesson_name, version, seed, limits)
        done = _cached(out / f"{student}.json", key)
        if done is not None:
            records[student] = done
        else:
            todo.append((student, str(path), data, key))
    if todo:
        log(f"grading {len(todo)} submission(s) of {lesson_name} ({len(records)} already graded)")
        _run_judges(lesson, todo, out, workers or os.cpu_count() or 1, limits, seed, with_gradescope, log)
    for student, _ in submissions:
        if student not in records:
            try:
                records[student] = json.loads((out / f"{student}.json").read_text())
            except (OSError, ValueError):
                log(f"{student}: no result (the grader failed on it)")
    outputs.write_gradebook(out, list(records.values()), lesson.exercises)
    return [records[s] for s, _ in submissions if s in records]


def _cached(path: Path, key: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key and record.get("status") != "error" else None


def _run_judges(lesson: Lesson, todo: list, out: Path, workers: int, limits: Limits, seed: int | None,
                with_gradescope: bool, log) -> None:
    import torch
    torch.set_num_threads(1)
    n = max(1, min(workers, len(todo)))
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
    home = tempfile.mkdtemp(prefix="torchdojo-grading-")
    os.chmod(home, 0o755)
    zfds = [theirs.fileno() for _, theirs in pairs]
    zygote = subprocess.Popen([sys.executable, "-m", "grader.grading.sandbox", str(lesson.path), *map(str, zfds)],
                              env=_sandbox_env(home), pass_fds=zfds, cwd=str(lesson.path.parent),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(out / ".zygote.log", "w"))
    for _, theirs in pairs:
        theirs.close()
    ctx = multiprocessing.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    judges = [ctx.Process(target=_judge, args=(i, pairs[i][0], lesson, limits, seed, out, with_gradescope,
                                               tasks, results), daemon=True) for i in range(n)]
    for j in judges:
        j.start()
    for mine, _ in pairs:
        mine.close()
    for task in todo:
        tasks.put(task)
    for _ in judges:
        tasks.put(None)
    busy: dict[int, str] = {}
    left = {t[0] for t in todo}
    try:
        while left:
            try:
                kind, slot, student = results.get(timeout=0.5)
            except queue.Empty:
                for slot, j in enumerate(judges):
                    if not j.is_alive() and slot in busy:
                        log(f"{busy[slot]}: the judge process died (exit {j.exitcode}); it will be regraded next run")
                        left.discard(busy.pop(slot))
                if not any(j.is_alive() for j in judges):
                    break
                continue
            if kind == "start":
                busy[slot] = student
            else:
                busy.pop(slot, None)
                left.discard(student)
                log(f"graded {student}")
    finally:
        for j in judges:
            j.join(timeout=5)
            if j.is_alive():
                j.kill()
        zygote.kill()
        zygote.wait()
        import shutil
        shutil.rmtree(home, ignore_errors=True)
