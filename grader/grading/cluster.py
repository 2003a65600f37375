"""Grading on a Dask cluster (`grade --scheduler tcp://HOST:PORT`): one task per submission.

    client ── a task per submission ──> scheduler ──> workers: each is a judge (trusted) with a warm zygote
      └─ writes each record as it arrives                   for the lesson, started by its first task, then reused

A worker grades a submission exactly as a local judge does (batch.grade_one) and returns its record; only the
client writes files, with the same code as a local run, so the results are the same files. Dask runs the tasks
of a lost worker again elsewhere; the client takes one result per submission. Only this module imports Dask,
and only `grade --scheduler` imports it.
"""
from __future__ import annotations

import atexit
import threading

from distributed import Client, as_completed, get_worker

from grader.compare import one_line
from grader.grading import outputs
from grader.grading.batch import (UsageError, check_isolation, grade_one, grader_version, hide_list, judge_ready,
                                  new_home, release, set_limits, start_zygote)
from grader.grading.judge import Limits, claim_uids
from grader.grading.submission import Lesson

CONNECT_S, WORKERS_S = 10, 60  # seconds to reach the scheduler, and to wait for a first worker


class VersionMismatch(Exception):
    """A worker whose course (grader sources, lesson, checks) differs from the client's."""


def grade_on_cluster(address: str, lesson: Lesson, version: str, todo: list, out, limits: Limits, seed: int | None,
                     with_gradescope: bool, require_isolation: bool, log) -> None:
    """Grade `todo` on the workers of the scheduler at `address`; write each record as it arrives."""
    try:
        client = Client(address, timeout=CONNECT_S)
    except Exception as e:  # refused, timed out, not an address
        raise UsageError(f"--scheduler {address}: no Dask scheduler answered ({one_line(e)}) — start one with "
                         "`dask scheduler` and pass the address it prints (tcp://HOST:8786)") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_S)
        except TimeoutError:
            raise UsageError(f"--scheduler {address}: no worker joined in {WORKERS_S} s — start some with "
                             f"`dask worker {address} --nthreads 1`") from None
        # what every task needs (the hidden seed goes to the judges, the workers, only), a task of its own: each
        # worker fetches it once, and it is made again if every worker holding it is lost (scattered data is not)
        batch = {"lesson": lesson.name, "version": version, "seed": seed, "timeout": limits.timeout,
                 "memory_mb": limits.memory_mb, "hide": limits.hide, "require_isolation": require_isolation}
        shared = client.submit(dict, batch, pure=False)
        try:
            workers = list(client.scheduler_info(n_workers=-1)["workers"])
            warm = [client.submit(warm_up, shared, workers=[w], allow_other_workers=True, pure=False)
                    for w in workers]  # versions checked, zygotes started in parallel, before any submission
            for lines in client.gather(warm):
                for line in lines:
                    log(line)
            log(f"grading on {len(workers)} Dask worker(s) at {address}")
            futures = {client.submit(grade_task, shared, task, pure=False): task[0] for task in todo}
            for future in as_completed(futures):
                student = futures[future]
                try:
                    record = future.result()
                except (VersionMismatch, UsageError):  # a worker that joined late, or lacks isolation
                    raise
                except Exception as e:  # KilledWorker: every worker it ran on died; regraded next run
                    log(f"{student}: not graded ({type(e).__name__}: {one_line(e)})")
                    continue
                outputs.write_student(out, record, with_gradescope)
                log(f"{student}: {record['status']}")
        except (VersionMismatch, UsageError) as e:
            raise UsageError(str(e)) from None


# --- on a worker ----------------------------------------------------------------------------------------
class WarmGrader:
    """This worker as a judge of one lesson: a zygote it spawns sandboxes from, kept for the next tasks and
    batches (the limits and hidden folders, which may change from one batch to the next, go with each spawn)."""

    def __init__(self, batch: dict):
        self.lesson = Lesson.load(batch["lesson"])
        self.uids, self.locks = claim_uids(1)
        self.home = new_home()
        self.zygote, self.lock, self.batch = None, threading.Lock(), None
        try:
            self.use(batch)
            self.zygote, [self.sock] = start_zygote(self.lesson, 1, self.home)  # its errors: the worker's log
            self.notes = judge_ready(self.sock)
        except BaseException:
            self.close()
            raise

    def use(self, batch: dict) -> None:
        """The limits of `batch`, its folders hidden as well as ours; which protections are active."""
        same = ("timeout", "memory_mb", "hide", "require_isolation")
        if self.batch and all(self.batch[k] == batch[k] for k in same):
            return
        self.limits = Limits(timeout=batch["timeout"], memory_mb=batch["memory_mb"])
        set_limits(self.limits, self.lesson, hide_list([], batch["hide"]))  # the client's folders, and ours
        self.limits.workdir = self.home
        self.isolation = []
        check_isolation(self.limits, self.uids[0], batch["require_isolation"], self.isolation.append)
        self.batch = batch

    @property
    def alive(self) -> bool:
        return self.zygote.poll() is None

    def grade(self, batch: dict, task: tuple) -> dict:
        with self.lock:
            self.use(batch)
            return grade_one(self.sock, self.uids[0], self.lesson, self.limits, batch["seed"], self.notes, task)

    def close(self) -> None:
        with self.lock:
            if self.zygote is not None:
                self.zygote.kill()
                self.zygote.wait()
                self.sock.close()
            release(self.uids, self.locks, self.home)


_graders: dict[str, WarmGrader] = {}
_versions: dict[str, str] = {}
_lock = threading.Lock()


def warm_grader(batch: dict) -> WarmGrader:
    """This worker's grader for the batch's lesson: the one kept from earlier tasks, or a new one."""
    with _lock:
        name = batch["lesson"]
        if name not in _versions:
            _versions[name] = grader_version(Lesson.load(name))
        if _versions[name] != batch["version"]:
            raise VersionMismatch(f"the Dask worker {get_worker().address} runs grader version {_versions[name]} "
                                  f"for {name}, this client {batch['version']}: run the same course commit on every "
                                  "machine (git rev-parse HEAD) and restart that worker")
        grader = _graders.get(name)
        if grader is None or not grader.alive:
            for old in _graders.values():  # one grader per worker: another lesson's zygote goes
                old.close()
            _graders.clear()
            grader = _graders[name] = WarmGrader(batch)
        return grader


def warm_up(batch: dict) -> list[str]:
    """A Dask task: check this worker's version, start its grader, say which protections it has."""
    grader = warm_grader(batch)
    with grader.lock:
        grader.use(batch)
        return [f"worker {get_worker().address}: {line}" for line in grader.isolation]


def grade_task(batch: dict, task: tuple) -> dict:
    """A Dask task: the record of one submission (student, source, notebook bytes, cache key)."""
    return warm_grader(batch).grade(batch, task)


@atexit.register
def _close_graders() -> None:
    """The worker is closing: its zygote and sandboxes go. (A worker killed outright takes them with it:
    the zygote and every sandbox die with their parent (PDEATHSIG); the next batch removes the folder.)"""
    with _lock:
        for grader in _graders.values():
            grader.close()
        _graders.clear()
