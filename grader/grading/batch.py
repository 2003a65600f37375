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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.build import ROOT
from grader.grading import outputs
from grader.grading.judge import Limits, claim_uids, sweep
from grader.grading.submission import Lesson
from grader.registry import get, lesson as known_lesson
from grader.runner import HIDDEN_SEED_ENV

SAFE_ID = re.compile(r"[^\w.-]")  # a student id names files: letters of any script, digits, _ . -


class UsageError(Exception):
    """A command the grader cannot carry out as given (a bad path, lesson or option): nothing was graded."""


def find_submissions(paths: list[str], lesson: str) -> list[tuple[str, Path]]:
    """(student, notebook) pairs. A notebook is one student: the folder above `<lesson>/` in nbgrader's layout
    (submitted/alice/01_tensors/01_tensors.ipynb is alice), else its file stem. A folder is nbgrader's layout
    [submitted/]<student>/<lesson>/*.ipynb, one student's folder <student>/<lesson>/, or a folder of notebooks.
    A student with several notebooks is graded on the one named after the lesson, else the first by name (as
    for a folder, so for a shell glob of one); a student with none gets their <lesson>/ folder (graded as
    missing). The same file given twice counts once. UsageError when a path does not exist or a folder holds
    nothing to grade."""
    students: dict[str, list[Path]] = {}  # nbgrader's layout: student -> their notebooks for the lesson
    loose: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        if not p.is_dir():
            if p.parent.name == lesson and p.parent.parent.name:
                students.setdefault(p.resolve().parent.parent.name, []).append(p)
            else:
                loose.append(p)
            continue
        base = p / "submitted" if (p / "submitted").is_dir() else p
        folders = [base] if (base / lesson).is_dir() else \
            sorted(d for d in base.iterdir() if d.is_dir() and (d / lesson).is_dir())
        for d in folders:
            students.setdefault(d.resolve().name, []).extend((d / lesson).glob("*.ipynb"))
            students[d.resolve().name].append(d / lesson)  # the folder itself stands for "no notebook"
        if not folders:
            books = sorted(base.glob("*.ipynb"))
            if not books:
                raise UsageError(f"{p}: nothing to grade for {lesson} — expected notebooks (*.ipynb), or "
                                 f"nbgrader's folders <student>/{lesson}/*.ipynb")
            loose += books
    found = [(student, _pick(books, lesson)) for student, books in students.items()]
    found += [(b.stem, b) for b in loose]
    ids = {student: SAFE_ID.sub("_", student).lstrip(".") or "student" for student, _ in found}
    out, used, seen = [], set(), set()
    for student, path in sorted(found, key=lambda sp: (ids[sp[0]], str(sp[1]))):  # the same ids in any order
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        sid = unique = ids[student]
        k = 2
        while unique in used or (unique != sid and unique in ids.values()):  # sam-2 is taken by a real sam-2
            unique, k = f"{sid}-{k}", k + 1
        used.add(unique)
        out.append((unique, path))
    return out


def _pick(books: list[Path], lesson: str) -> Path:
    """A student's notebook: the one named after the lesson, else the first by name; else their folder."""
    notebooks = sorted(b for b in books if b.suffix == ".ipynb")
    return ([b for b in notebooks if b.stem == lesson] or notebooks or books)[0]


def grader_version(lesson: Lesson) -> str:
    """Changes whenever the grader's core, the lesson or its checks change: cached results are then regraded."""
    import inspect
    files = set((ROOT / "grader").glob("*.py")) | set((ROOT / "grader" / "grading").glob("*.py"))
    files |= {Path(inspect.getfile(get(n).check)) for n in lesson.exercises}
    h = hashlib.sha256(lesson.digest.encode())
    for f in sorted(files):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def hidden_seed() -> int | None:
    value = os.environ.get(HIDDEN_SEED_ENV, "").strip()
    try:
        return int(value) if value else None
    except ValueError:
        raise UsageError(f"{HIDDEN_SEED_ENV}={value!r} is not an integer") from None


def cache_key(digest: str, lesson: str, version: str, seed: int | None, limits: Limits) -> str:
    text = f"{digest}|{lesson}|{version}|{seed}|{limits.timeout}|{limits.memory_mb}"
    return hashlib.sha256(text.encode()).hexdigest()


def hide_list(submissions: list[tuple[str, Path]], extra: list[str]) -> list[str]:
    """Folders the sandbox must not see: solutions, tests, the home folder, every submission's folder, `extra`
    (the outputs, --hide), those of them that exist here. What the sandbox needs inside one of them (the
    interpreter, the grader) is laid back by the sandbox."""
    wanted = {ROOT / "solutions", ROOT / "tests", ROOT / ".git", Path.home()} | {p.parent for _, p in submissions}
    wanted |= {Path(e) for e in extra}
    return [str(d) for d in sorted({w.resolve() for w in wanted if w.exists()})]


def needed_paths() -> list[str]:
    """What the sandbox must still see: the interpreter, its standard library and packages, the grader, the
    course's datasets."""
    import sysconfig
    paths = {sys.prefix, sys.base_prefix, str(ROOT / "grader"), str(ROOT / "datasets"),
             str(Path(__import__("torch").__file__).parent)}
    paths |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return sorted(str(Path(p).resolve()) for p in paths if Path(p).exists())


def set_limits(limits: Limits, lesson: Lesson, hide: list[str]) -> None:
    """What the batch adds to the limits on this machine: folders hidden and needed, the CPU backstop."""
    limits.hide = hide
    limits.needed = needed_paths()
    limits.cpu_s = int(4 * sum(limits.round_seconds(get(n)) for n in lesson.exercises) + 60)


def _sandbox_env(home: str) -> dict[str, str]:
    """The zygote's whole environment: nothing from ours but what Python and torch need. Its temporary files
    go to the batch's own folder, removed at the end."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TORCHDOJO_HOME": home, "TMPDIR": home,
           "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    for name in ("CUDA_VISIBLE_DEVICES", "TORCHDOJO_DEVICES"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _judge(slot: int, uid: int | None, zsock: socket.socket, lesson: Lesson, limits: Limits, seed: int | None,
           out: Path, with_gradescope: bool, tasks, results) -> None:
    """A judge process: grade submissions from `tasks` until it is empty."""
    from grader.grading.sandbox import PR_SET_PDEATHSIG, _prctl
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    zygote_notes = judge_ready(zsock)
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put(("start", slot, task[0], ""))
        record = grade_one(zsock, uid, lesson, limits, seed, zygote_notes, task)
        outputs.write_student(out, record, with_gradescope)
        results.put(("done", slot, task[0], record["status"]))


def judge_ready(zsock: socket.socket) -> list[str]:
    """Set up this process as a judge and wait for the zygote: returns the notes of the lesson's teaching cells."""
    import torch
    torch.set_num_threads(1)
    return json.loads(zsock.recv(1 << 20) or b"{}").get("notes", [])


def grade_one(zsock: socket.socket, uid: int | None, lesson: Lesson, limits: Limits, seed: int | None,
              zygote_notes: list[str], task: tuple) -> dict:
    """The record of one submission, judged in this (trusted) process; its code runs in sandboxes of the zygote."""
    from grader.grading.judge import grade_submission
    student, source, data, key = task
    exercises = [get(n) for n in lesson.exercises]
    t0 = time.monotonic()
    answers, status, problem = lesson.answers(data)
    try:
        if problem:
            record = outputs.ungraded_record(student, lesson, source, status, problem, exercises, key)
        else:
            reports, notes = grade_submission(zsock, uid, limits, lesson, answers, seed)
            record = outputs.result_record(student, lesson.name, source, key, status, reports, notes,
                                           sum(ex.points for ex in exercises), time.monotonic() - t0)
    except Exception as e:  # the grader's own failure: reported, not cached, regraded on the next run
        record = outputs.ungraded_record(student, lesson, source, "error",
                                         f"grading failed: {type(e).__name__}: {e}", exercises, key)
    if zygote_notes:
        record["lesson_notes"] = zygote_notes
    return record


def grade(lesson_name: str, paths: list[str], out: Path, workers: int | None = None,
          with_gradescope: bool = False, limits: Limits | None = None, hide: list[str] | None = None,
          require_isolation: bool = False, scheduler: str | None = None, log=print) -> list[dict]:
    """Grade every submission of `paths` against lesson `lesson_name`; write everything under `out`. With
    `scheduler` (a Dask scheduler's address) the submissions are graded by its workers (grader/grading/cluster.py).

    Returns one record per submission (status `graded`, `missing`, `unreadable`, `no_cells` or `error`). UsageError
    when the command cannot be carried out (nothing is graded then)."""
    try:
        known_lesson(lesson_name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    for folder in hide or []:
        if not Path(folder).is_dir():
            raise UsageError(f"--hide {folder}: no such folder")
    lesson = Lesson.load(lesson_name)
    limits = limits or Limits()
    version, seed = grader_version(lesson), hidden_seed()
    submissions = find_submissions(paths, lesson_name)
    out.mkdir(parents=True, exist_ok=True)
    set_limits(limits, lesson, hide_list(submissions, [str(out), *(hide or [])]))
    exercises = [get(n) for n in lesson.exercises]
    todo, records, keys, cached = [], {}, {}, 0
    for student, path in submissions:
        try:
            data = path.read_bytes()
        except OSError as e:  # a folder (a student's empty <lesson>/ folder, or one named *.ipynb), no access
            problem = (("missing", f"no notebook (.ipynb) was found in {path}") if path.is_dir() and
                       path.suffix != ".ipynb" else ("unreadable", f"{path.name} could not be read: {e.strerror}"))
            records[student] = outputs.ungraded_record(student, lesson, str(path), *problem, exercises)
            outputs.write_student(out, records[student], with_gradescope)
            continue
        key = keys[student] = cache_key(hashlib.sha256(data).hexdigest(), lesson_name, version, seed, limits)
        done = _cached(out / f"{student}.json", key)
        if done is not None:
            records[student], cached = done, cached + 1
            if with_gradescope:
                outputs.write_gradescope(out, done)
        else:
            todo.append((student, str(path), data, key))
    if todo:
        log(f"grading {len(todo)} submission(s) of {lesson_name} ({cached} already graded)")
        if scheduler:
            try:
                from grader.grading.cluster import grade_on_cluster  # imports Dask: only here
            except ImportError as e:
                if e.name not in ("dask", "distributed"):
                    raise
                raise UsageError("--scheduler needs Dask: pip install 'dask[distributed]'") from None
            grade_on_cluster(scheduler, lesson, version, todo, out, limits, seed, with_gradescope,
                             require_isolation, log)
        else:
            _run_judges(lesson, todo, out, workers or os.cpu_count() or 1, limits, seed, with_gradescope,
                        require_isolation, log)
    for student, path in submissions:
        if student in records:
            continue
        record = _read(out / f"{student}.json")
        if record.get("key") == keys[student]:
            records[student] = record
        else:  # its judge died: recorded as the grader's failure, regraded on the next run
            record = outputs.ungraded_record(student, lesson, str(path), "error",
                                             "the grading process died while grading this submission; rerun "
                                             "the same command to grade it again", exercises)
            outputs.write_student(out, record, with_gradescope)
            records[student] = record
    outputs.write_gradebook(out, list(records.values()), lesson.exercises)
    return [records[s] for s, _ in submissions]


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _cached(path: Path, key: str) -> dict | None:
    """The result graded earlier with the same key (file, lesson, grader, seed, limits), unless it failed."""
    record = _read(path)
    return record if record.get("key") == key and record.get("status") != "error" else None


def _run_judges(lesson: Lesson, todo: list, out: Path, workers: int, limits: Limits, seed: int | None,
                with_gradescope: bool, require_isolation: bool, log) -> None:
    import torch
    torch.set_num_threads(1)
    n = max(1, min(workers, len(todo)))
    uids, locks = claim_uids(n)
    home = new_home()
    zygote, judges, tasks = None, [], None
    try:
        limits.workdir = home
        check_isolation(limits, uids[0], require_isolation, log)
        with open(out / ".zygote.log", "w") as stderr:
            zygote, socks = start_zygote(lesson, n, home, stderr)
        ctx = multiprocessing.get_context("fork")
        tasks, results = ctx.Queue(), ctx.Queue()
        tasks.cancel_join_thread()  # an interrupted batch must not wait to flush tasks nobody will read
        judges = [ctx.Process(target=_judge, args=(i, uids[i], socks[i], lesson, limits, seed, out,
                                                   with_gradescope, tasks, results), daemon=True)
                  for i in range(n)]
        for j in judges:
            j.start()
        for sock in socks:
            sock.close()
        for task in todo:
            tasks.put(task)
        for _ in judges:
            tasks.put(None)
        _collect(judges, results, {t[0] for t in todo}, log)
    finally:
        for j in judges:
            j.kill()
            j.join()
        if zygote is not None:
            zygote.kill()
            zygote.wait()
        release(uids, locks, home)
        log_file = out / ".zygote.log"  # the lesson's own errors, if any, for whoever maintains the course
        if log_file.exists() and not log_file.stat().st_size:
            log_file.unlink()


def new_home() -> str:
    """The batch's own temporary folder (the sandboxes' working directory and $HOME), readable by their uid."""
    _remove_stale_homes()
    home = tempfile.mkdtemp(prefix=f"torchdojo-grading-{os.getpid()}-")
    os.chmod(home, 0o755)
    return home


def check_isolation(limits: Limits, uid: int | None, require_isolation: bool, log) -> None:
    """Say which protections are active; UsageError when one is missing and `require_isolation`."""
    from grader.grading.sandbox import probe_isolation
    protections = probe_isolation(limits.sandbox_config(uid))
    log("isolation: " + " · ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok, _ in protections))
    missing = [why for _, ok, why in protections if not ok]
    if missing:
        advice = ("grade as root with CAP_SYS_ADMIN (in Docker: --cap-add SYS_ADMIN, or --privileged) for "
                  "the full isolation")
        if require_isolation:
            raise UsageError("refusing to grade without full isolation (--require-isolation): "
                             + "; ".join(missing) + f" — {advice}")
        log("WARNING: " + "; ".join(missing) + f" — {advice}")


def start_zygote(lesson: Lesson, n: int, home: str, stderr=None) -> tuple[subprocess.Popen, list[socket.socket]]:
    """The zygote of `lesson` (a fresh interpreter, scrubbed environment) and `n` judge sockets to it; its
    stderr (the lesson's own errors) goes to the file `stderr`, else to ours."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
    zfds = [theirs.fileno() for _, theirs in pairs]
    zygote = subprocess.Popen([sys.executable, "-m", "grader.grading.sandbox", str(lesson.path), *map(str, zfds)],
                              env=_sandbox_env(home), pass_fds=zfds, cwd=str(lesson.path.parent),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
                              stderr=stderr)
    for _, theirs in pairs:
        theirs.close()
    return zygote, [mine for mine, _ in pairs]


def release(uids: list, locks: list[int], home: str) -> None:
    """Kill what is left of the sandboxes of `uids`, free the uids, remove the batch's folder."""
    for uid in uids:
        sweep(uid)
    for fd in locks:
        os.close(fd)
    shutil.rmtree(home, ignore_errors=True)


def _remove_stale_homes() -> None:
    """The temporary folders of batches killed with kill -9 (their process is gone), which could not clean up."""
    for folder in Path(tempfile.gettempdir()).glob("torchdojo-grading-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _collect(judges: list, results, left: set[str], log) -> None:
    """Wait until every submission is done or its judge died."""
    busy: dict[int, str] = {}
    while left:
        try:
            kind, slot, student, status = results.get(timeout=0.5)
        except queue.Empty:
            for slot, j in enumerate(judges):
                if not j.is_alive() and slot in busy:
                    log(f"{busy[slot]}: the judge process died (exit {j.exitcode}); it will be regraded next run")
                    left.discard(busy.pop(slot))
            if not any(j.is_alive() for j in judges):
                return
            continue
        if kind == "start":
            busy[slot] = student
        else:
            busy.pop(slot, None)
            left.discard(student)
            log(f"{student}: {status}")
