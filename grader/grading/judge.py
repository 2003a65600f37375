"""The trusted side: runs the checks on its own inputs and judges the plain data a sandbox sends back.

`grade_submission` grades one submission in this (judge) process: every check runs here through
`run_exercise`, with an `invoke` that ships each call of learner code to the submission's sandbox. A crash,
a hang or a process that ends costs the exercise being checked; the next exercise gets a fresh sandbox.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import time

import grader.runner as runner
from grader.compare import Mismatch
from grader.grading import wire
from grader.grading.submission import Answer, Lesson
from grader.registry import get
from grader.report import CaseResult, Report
from grader.runner import LearnerError, NotAttempted
from grader.tracing import MixedDevices


class Abort(BaseException):
    """The sandbox died or ran out of time: the exercise ends here (a BaseException, so no check catches it)."""


DEFAULT_TIMEOUT = 30.0  # seconds per round for an exercise that states no time_limit_s of its own
HEADROOM = 1.5          # an exercise's own limit is judged by its check; the sandbox only stops hangs past it


class Limits:
    """What one submission may use."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = 2048, nproc: int = 32,
                 tmp_mb: int = 64, hide: list[str] | None = None):
        self.timeout, self.memory_mb, self.nproc, self.tmp_mb = timeout, memory_mb, nproc, tmp_mb
        self.hide = list(hide or [])
        # set by the batch: folders that must stay visible, the sandbox process's lifetime CPU cap (a backstop
        # behind the per-round budgets), the batch's temporary folder
        self.needed: list[str] = []
        self.cpu_s = int(timeout * 4 + 60)
        self.workdir: str | None = None

    def sandbox_config(self, uid: int | None) -> dict:
        """What sandbox.isolate needs to know."""
        return {"uid": uid, "memory_mb": self.memory_mb, "nproc": self.nproc, "tmp_mb": self.tmp_mb,
                "hide": self.hide, "needed": self.needed, "cpu_s": self.cpu_s, "workdir": self.workdir}

    def round_seconds(self, exercise) -> float:
        """The budget of one round of `exercise`: never less than what its check allows in a notebook."""
        return max(self.timeout, HEADROOM * exercise.time_limit_s)


UID_BASE, UID_COUNT = 61000, 1000


def claim_uids(n: int) -> tuple[list, list[int]]:
    """As root: `n` sandbox uids that no other batch on this host holds, each locked with flock for as long as
    this process and its judges live, and swept of any leftover process. Returns (uids, lock fds to close at
    the end). Without root there is no uid separation: (None, ...), nothing locked."""
    if os.geteuid() != 0:
        return [None] * n, []
    import fcntl
    import tempfile
    folder = os.path.join("/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir(), "torchdojo-uids")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    uids, fds = [], []
    for uid in range(UID_BASE, UID_BASE + UID_COUNT):
        fd = os.open(os.path.join(folder, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another batch's sandboxes run as this uid
            os.close(fd)
            continue
        sweep(uid)  # leftovers of a batch that was killed
        uids.append(uid)
        fds.append(fd)
        if len(uids) == n:
            return uids, fds
    for fd in fds:
        os.close(fd)
    raise RuntimeError(f"all {UID_COUNT} sandbox uids from {UID_BASE} are held by other grading batches")


def sweep(uid: int | None) -> None:
    """SIGKILL every process that runs as `uid`, until none is left (fork bombs keep forking for a while)."""
    if uid is None:
        return
    for _ in range(200):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    status = dict(line.split(":", 1) for line in f if line.startswith(("State:", "Uid:")))
                if int(status["Uid"].split()[0]) == uid and not status["State"].strip().startswith("Z"):
                    os.kill(int(entry), signal.SIGKILL)  # zombies are dead already: the zygote reaps them
                    found = True
            except (OSError, ValueError, KeyError):
                continue
        if not found:
            return
        time.sleep(0.01)


def describe_status(status: int | None) -> str:
    """A learner-facing account of how the sandbox process ended."""
    if status is None:
        return "the process running your code ended"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGSEGV:
            return "your code crashed the Python process (SIGSEGV, a segmentation fault: invalid memory access)"
        if sig == signal.SIGKILL:
            return "the process running your code was killed (SIGKILL) — out of memory?"
        if sig == signal.SIGXCPU:
            return "your code used up its CPU time limit (SIGXCPU)"
        return f"your code crashed the Python process ({name})"
    if os.WIFEXITED(status):
        return (f"your code ended the Python process (exit status {os.WEXITSTATUS(status)}; os._exit() or a "
                "crash in native code)")
    return "the process running your code ended"


WALL_FACTOR = 3


class Budget:
    """`seconds` of the sandbox's CPU time, and at most WALL_FACTOR times as many on the wall clock."""

    def __init__(self, box: "Sandbox", seconds: float):
        self.seconds = seconds
        self.cpu0 = box.cpu_seconds()
        self.wall_end = time.monotonic() + WALL_FACTOR * seconds

    def spent(self, box: "Sandbox") -> bool:
        return box.cpu_seconds() - self.cpu0 > self.seconds or time.monotonic() > self.wall_end


class Sandbox:
    """One live sandbox process: spawned by the zygote, driven over a socket, killed with its whole uid."""

    def __init__(self, zygote: socket.socket, uid: int | None, limits: Limits):
        self.zygote, self.uid, self.limits = zygote, uid, limits
        self.sock: socket.socket | None = None
        self.pid = 0

    def spawn(self) -> None:
        mine, theirs = socket.socketpair()
        config = {"op": "spawn", **self.limits.sandbox_config(self.uid)}
        socket.send_fds(self.zygote, [json.dumps(config).encode()], [theirs.fileno()])
        theirs.close()
        self.pid = json.loads(self.zygote.recv(65536))["pid"]
        self.sock = mine

    def send(self, message) -> None:
        try:
            wire.send(self.sock, message)
        except OSError:
            pass  # it died: the reply read says so

    def cpu_seconds(self) -> float:
        """CPU time the sandbox process has used so far (0 when it is gone)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def recv(self, budget: "Budget"):
        """The next message, once the sandbox is ready to send it within its budget; else wire.TimedOut.

        The limit counts the sandbox's CPU seconds, so a loaded machine does not fail slow-but-correct
        code, and wall-clock seconds up to WALL_FACTOR times as many (a hang that sleeps)."""
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if ready:
                return wire.recv(self.sock, time.monotonic() + 30)
            if budget.spent(self):
                raise wire.TimedOut("out of time")

    def kill(self):
        """Kill the process group and every process of the sandbox's uid; return its wait status."""
        if not self.pid:
            return None
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        sweep(self.uid)
        self.zygote.sendall(json.dumps({"op": "wait", "pid": self.pid}).encode())
        status = json.loads(self.zygote.recv(65536))["status"]
        if self.sock is not None:
            self.sock.close()
        self.sock, self.pid = None, 0
        return status

    @property
    def alive(self) -> bool:
        return self.sock is not None


class SubmissionRun:
    """The sandbox of one submission, respawned after a crash, and the `invoke` its checks use."""

    def __init__(self, zygote: socket.socket, uid: int | None, limits: Limits, answers: list[Answer]):
        self.limits = limits
        self.box = Sandbox(zygote, uid, limits)
        self.answers = answers
        self.skip: set[int] = set()
        self.cell_errors: dict[str, str] = {}     # exercise -> what its answer cell did when it ran
        self.defined: dict[str, bool] = {}
        self.budget: Budget | None = None
        self.hidden = False
        # A cell shared by several exercises (one cell defining two answers) runs once.
        self.program, seen = [], {}
        for i, a in enumerate(answers):
            if a.source in seen:
                continue
            seen[a.source] = i
            self.program.append([i, a.name, a.source])

    def start(self) -> None:
        """A fresh sandbox with the answer cells executed; a cell that kills or hangs it is skipped."""
        while True:
            self.box.spawn()
            self.box.send({"cells": self.program, "skip": sorted(self.skip),
                           "names": [a.name for a in self.answers]})
            budget = Budget(self.box, self.limits.timeout)
            current = None
            try:
                while True:
                    msg = self.box.recv(budget)
                    if msg.get("op") == "cell":
                        current = int(msg["i"])
                        budget = Budget(self.box, self.limits.timeout)
                    elif msg.get("op") == "ready":
                        break
                    else:
                        raise wire.WireError("unexpected message")
            except wire.WireError as e:
                status = self.box.kill()
                if current is None:
                    raise RuntimeError(f"the sandbox did not start: {describe_status(status)}") from None
                why = (f"it did not finish within its time limit ({self.limits.timeout:g} s)"
                       if isinstance(e, wire.TimedOut) else describe_status(status).replace("your code", "it"))
                self._cell_error(current, f"your answer cell was skipped: when it ran, {why}")
                self.skip.add(current)
                continue
            for cell in msg.get("cells", []):
                if type(cell) is dict and cell.get("error"):
                    self._cell_error(int(cell["i"]), f"your answer cell raised an error when it ran: {cell['error']}")
            self.defined = {k: bool(v) for k, v in dict(msg.get("defined", {})).items()}
            return

    def _cell_error(self, i: int, message: str) -> None:
        """Note what the answer cell of answers[i] did, for every exercise that cell answers."""
        for a in self.answers:
            if a.source == self.answers[i].source:
                self.cell_errors.setdefault(a.name, message)

    def stop(self) -> None:
        if self.box.alive:
            self.box.kill()
        else:
            sweep(self.box.uid)

    # --- Tester.invoke ------------------------------------------------------------------------------
    def invoke(self, forbidden: dict, fn, args: tuple, kwargs: dict, watch_devices: bool = False):
        """Run one call of learner code in the sandbox and turn its reply back into a value or exception."""
        if not self.box.alive:
            self.start()
        target = _target(fn)
        request = {"target": target, "args": wire.encode(args, _ref, strict=True),
                   "kwargs": wire.encode(kwargs, _ref, strict=True), "forbidden": dict(forbidden),
                   "watch": bool(watch_devices)}
        self.box.send(request)
        try:
            reply = self.box.recv(self.budget)
        except wire.TimedOut:
            self.box.kill()
            raise Abort(f"your code did not finish within its time limit ({self.budget.seconds:g} s) — an "
                        "endless loop, or far too slow?") from None
        except wire.WireError as e:
            status = self.box.kill()
            why = describe_status(status) if isinstance(e, wire.Closed) else f"it sent a broken reply ({e})"
            raise Abort(f"while the check was calling your code, {why.replace('your code ', 'it ', 1)}") from None
        if type(reply) is not dict:
            self.box.kill()
            raise Abort("the sandbox sent a broken reply")
        if reply.get("ok") is True:
            try:
                value = wire.decode(reply.get("value"))
            except wire.WireError as e:
                self.box.kill()
                raise Abort(f"the sandbox sent a broken reply ({e})") from None
            why = wire.unsendable(value)
            if why:
                raise LearnerError(f"your code returned {why}, which the grader cannot carry back to the check "
                                   "— return plain data: tensors, numbers, strings, and lists, tuples and dicts "
                                   "(with str or int keys) of them")
            return value
        kind = reply.get("kind")
        message = str(reply.get("message", ""))[:2000]
        if kind == "NotAttempted":
            raise NotAttempted()
        if kind == "Mismatch":
            raise Mismatch(message)
        if kind == "MixedDevices":
            raise MixedDevices(str(reply.get("name", "?")), {str(d) for d in reply.get("devices", [])})
        raise LearnerError(message or "your code raised an error")


def _ref(value):
    if isinstance(value, wire.LearnerRef):
        return {wire.TAG: "learner", "name": value.name}
    if callable(value) and not isinstance(value, __import__("torch").Tensor):
        ref = wire.trusted_ref(value)
        if ref is None:
            raise TypeError(f"a check passed {value!r} to learner code: only module-level functions and "
                            "classes of trusted modules can cross to the sandbox (see Tester.call)")
        return ref
    return None


def _target(fn):
    tag = _ref(fn)
    if tag is None:
        raise TypeError(f"Tester.call needs the learner's object or a module-level driver, got {fn!r}")
    return tag


def check_exercise(run: SubmissionRun, name: str, hidden_seed: int | None) -> Report:
    """The exercise's public round, then (if it passed and there is a hidden seed) its hidden round."""
    exercise = get(name)
    if not run.box.alive:
        run.start()
    if not run.defined.get(name, False):
        why = run.cell_errors.get(name, "its answer cell did not define it")
        return Report(name, "failed", exercise.points, error=f"{name} is not defined — {why}")
    reports = []
    rounds = [(runner.PUBLIC_SEED, False)] + ([(hidden_seed, True)] if hidden_seed is not None else [])
    for seed, hidden in rounds:
        run.budget = Budget(run.box, run.limits.round_seconds(exercise))
        try:
            report = runner.run_exercise(exercise, wire.LearnerRef(name), invoke=run.invoke,
                                         rounds=[(seed, hidden)])
        except Abort as e:
            report = Report(name, "failed", exercise.points, error=str(e))
        if hidden:
            report = _redact(report)
        reports.append(report)
        if not report.passed:
            break
    first = reports[0]
    if first.status == "not_attempted" or len(reports) == 1:
        return first
    hidden = reports[1]
    # the round itself failed (a timeout, a crash): counted in the class report under one code, without its words
    stopped = CaseResult("hidden round", False, hidden.error, hidden=True, mistake="hidden-round-failed")
    cases = hidden.cases if hidden.cases else [stopped]
    if hidden.error and hidden.cases:
        cases = cases + [stopped]
    return Report(name, "passed" if hidden.passed else "failed", exercise.points, first.cases + cases)


def _redact(report: Report) -> Report:
    """The hidden round in our own words only. Its cases are numbered, without inputs or diagnoses, where they are
    made (Tester.case); what stopped the round may quote the learner's text, which could carry hidden inputs out."""
    error = ""
    if report.error:
        error = ("on hidden inputs, your code did not finish in time" if "did not finish" in report.error else
                 "on hidden inputs, your code crashed or ended the process" if "process" in report.error else
                 runner.HIDDEN_FAILURE)
    if report.status == "not_attempted":
        return Report(report.name, "failed", report.max_points, report.cases, error=error or runner.HIDDEN_FAILURE)
    return Report(report.name, report.status, report.max_points, report.cases, error=error)


def grade_submission(zygote: socket.socket, uid: int | None, limits: Limits, lesson: Lesson,
                     answers: list[Answer], hidden_seed: int | None) -> tuple[list[Report], list[str]]:
    """Every exercise of the lesson against one submission's answers: (reports, notes for the learner)."""
    run = SubmissionRun(zygote, uid, limits, answers)
    notes = [a.note for a in answers if a.note]
    reports = []
    try:
        sweep(run.box.uid)
        for name in lesson.exercises:
            reports.append(check_exercise(run, name, hidden_seed))
    finally:
        run.stop()
    for name, error in run.cell_errors.items():
        if run.defined.get(name):  # else its report says it already: "<name> is not defined — <error>"
            notes.append(f"{name}: {error}")
    return reports, notes
