"""Checks for 12_performance: timing a function correctly, the mean of a tensor across the ranks of a process
group, and one mixed-precision training step.

Learner code runs only inside drivers (module-level functions whose first argument is the learner's object) that
take and return plain data. `benchmark` runs against a clock the driver controls (time.perf_counter swapped for a
fake that advances by known amounts per call of the timed function), so the expected median is exact;
`all_reduce_mean` runs in real gloo process groups of two and three processes forked from the learner's process;
`autocast_train_step` trains one step of a small model whose hooks watch the dtypes and the autocast state.
The oracles are statistics.median over the chosen durations, plain sums over the ranks' inputs and the training
step written out here with torch.autocast.
"""
from __future__ import annotations

import ast
import ctypes
import math
import os
import select
import shutil
import signal
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from grader.compare import Mismatch, expect_tensor, kind_of
from grader.registry import exercise
from grader.runner import LearnerError, NotAttempted, describe_error, is_stub, untraced
from grader.tracing import canonical_name

LESSON = "12_performance"


def _plain(value) -> dict:
    """What a learner's function returned, as plain data: its type's name and, for numbers, the value."""
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return {"type": type(value).__name__, "value": float(value), "is_float": isinstance(value, float)}
    if isinstance(value, torch.Tensor):
        with untraced():
            number = float(value.detach().float().cpu()) if value.numel() == 1 and value.device.type != "meta" \
                else None
        return {"type": "Tensor", "value": number, "is_float": False}
    return {"type": kind_of(value), "value": None, "is_float": False}


def _expect_float(got: dict, what: str, advice: str) -> float:
    """The learner returned a Python float (a float subclass such as numpy.float64 is one too)."""
    if got["is_float"]:
        return got["value"]
    if got["type"] == "Tensor":
        raise Mismatch(f"{what} should be a Python float, got a tensor — {advice}")
    if got["type"] == "None":
        raise Mismatch(f"{what} should be a Python float, got None — a missing `return`?")
    raise Mismatch(f"{what} should be a Python float, got {got['type']} — {advice}")


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# ============================================================================================================
# benchmark
# ============================================================================================================
# The clock: time.perf_counter is replaced, while the learner's benchmark runs, by a fake whose reading stays put
# until the timed function is called; call i then moves it on by durations[i]. Reading the clock costs nothing,
# so the median of the per-call times is exactly statistics.median(durations[warmup:warmup + iters]).
# What is swapped: time.perf_counter, timeit.default_timer, and every name in the learner's globals bound to
# time.perf_counter (`from time import perf_counter [as pc]`); torch.cuda.synchronize and
# torch.accelerator.synchronize (and their aliases in the learner's globals) are replaced by a recorder, so
# synchronisation is observed on machines without CUDA; torch.cuda.is_available() answers True in every case (the
# CPU-only ones too, so "synchronise whenever CUDA is available" shows as a synchronize with no CUDA argument);
# timeit.Timer is wrapped to note that timeit was used (its own timer is the real clock). A fake CUDA argument is
# a CPU tensor of a subclass whose is_cuda, device and get_device() say cuda; it is the first argument in one
# case and the second (after a CPU tensor) in another, so that looking at args[0] only shows.
CLOCK_START = 1234.5  # a perf_counter reading is an arbitrary origin, never 0


class _FakeCudaTensor(torch.Tensor):
    """A CPU tensor that says it lives on cuda:0 (is_cuda, .device, .get_device()): a CUDA argument for machines
    without a GPU."""

    @property
    def is_cuda(self):
        return True

    @property
    def device(self):
        return torch.device("cuda", 0)

    def get_device(self):
        return 0


class _Clock:
    """The fake perf_counter and the log of what happened: 'clock' (a reading), 'call' (fn ran), 'sync'."""

    def __init__(self):
        self.now, self.log = CLOCK_START, []

    def __call__(self) -> float:
        self.log.append("clock")
        return self.now

    def sync(self, *args, **kwargs) -> None:
        self.log.append("sync")

    def timeit_timer(self, real):
        """timeit.Timer, noting in the log that it was made."""
        log = self.log

        class Timer(real):
            def __init__(self, *args, **kwargs):
                log.append("timeit")
                super().__init__(*args, **kwargs)

        return Timer


class _Workload:
    """The function being benchmarked: call i advances the clock by durations[i]; notes the arguments it got."""

    def __init__(self, clock: _Clock, durations: list, args: tuple):
        self.clock, self.durations, self.args = clock, durations, args
        self.calls, self.args_ok = 0, True

    def __call__(self, *args, **kwargs):
        same = len(args) == len(self.args) and all(a is b for a, b in zip(args, self.args)) and not kwargs
        self.args_ok = self.args_ok and same
        self.clock.log.append("call")
        self.clock.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        return self.calls


class _Swapped:
    """Sets attributes and learner globals for the time of a with block; puts back what it changed."""

    def __init__(self):
        self.undo = []

    def set(self, owner, name: str, value) -> None:
        if isinstance(owner, dict):
            self.undo.append((owner, name, owner[name]))
            owner[name] = value
        elif hasattr(owner, name):
            self.undo.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, old in reversed(self.undo):
            if isinstance(owner, dict):
                owner[name] = old
            else:
                setattr(owner, name, old)


def _available() -> bool:
    return True


def benchmark_run(fn, durations: list, args: list, cuda_at: list, warmup, iters) -> dict:
    """Driver: fn(workload, *args[, warmup=][, iters=]) against the fake clock; what it returned, how often and
    with what the workload was called, and the log of clock readings, calls, synchronisations and timeit uses.
    cuda_at: the positions in args that become fake CUDA tensors. warmup / iters None: not passed (the defaults).
    torch.cuda.is_available() answers True throughout."""
    import timeit

    with untraced():
        clock = _Clock()
        args = tuple(a.as_subclass(_FakeCudaTensor) if i in cuda_at else a for i, a in enumerate(args))
        work = _Workload(clock, list(durations), args)
        swap = _Swapped()
        real_clock, real_sync, real_available = time.perf_counter, torch.cuda.synchronize, torch.cuda.is_available
        accel_sync = getattr(getattr(torch, "accelerator", None), "synchronize", None)
        swap.set(time, "perf_counter", clock)
        swap.set(timeit, "default_timer", clock)
        swap.set(timeit, "Timer", clock.timeit_timer(timeit.Timer))
        swap.set(torch.cuda, "synchronize", clock.sync)
        if accel_sync is not None:
            swap.set(torch.accelerator, "synchronize", clock.sync)
        swap.set(torch.cuda, "is_available", _available)
        learner_globals = getattr(fn, "__globals__", None)
        if isinstance(learner_globals, dict):
            for name, value in list(learner_globals.items()):
                if value is real_clock:
                    swap.set(learner_globals, name, clock)
                elif value is real_sync or (accel_sync is not None and value is accel_sync):
                    swap.set(learner_globals, name, clock.sync)
                elif value is real_available:
                    swap.set(learner_globals, name, _available)
        kwargs = {k: v for k, v in (("warmup", warmup), ("iters", iters)) if v is not None}
    try:
        out = fn(work, *args, **kwargs)
    finally:
        swap.restore()
    return {"result": _plain(out), "calls": work.calls, "args_ok": work.args_ok, "log": clock.log}


def _timed(log: list) -> list[tuple[int, int]]:
    """For each call of fn, the positions in the log of the last clock reading before it and the first after."""
    spans = []
    for i, event in enumerate(log):
        if event == "call":
            before = max((j for j in range(i) if log[j] == "clock"), default=-1)
            after = next((j for j in range(i + 1, len(log)) if log[j] == "clock"), -1)
            spans.append((before, after, i))
    return spans


def _expect_synced(log: list, warmup: int, cuda_at: list) -> None:
    """With a CUDA argument: a synchronize between the previous call and the reading that starts each timed call,
    and between the call and the reading that stops it."""
    if "sync" not in log:
        if cuda_at != [0]:
            raise Mismatch(f"argument {cuda_at[0] + 1} of fn (not the first) is a CUDA tensor but torch.cuda."
                           "synchronize() was never called — look at every positional argument, not only args[0]: "
                           "cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)")
        raise Mismatch("an argument is a CUDA tensor but torch.cuda.synchronize() was never called — CUDA kernels "
                       "run asynchronously, so without it you time only the launch: synchronise before starting "
                       "and before stopping the clock")
    calls = [i for i, e in enumerate(log) if e == "call"]
    for k, (before, after, at) in enumerate(_timed(log)[warmup:]):
        previous = calls[warmup + k - 1] if warmup + k > 0 else -1
        if after < 0 or "sync" not in log[at + 1:after]:
            raise Mismatch("with a CUDA argument the clock was stopped without torch.cuda.synchronize() right "
                           "before it — the GPU may still be running fn: synchronise, then read the clock")
        if before < 0 or "sync" not in log[previous + 1:before]:
            raise Mismatch("with a CUDA argument the clock was started without torch.cuda.synchronize() right "
                           "before it — work queued earlier (the warm-up, the previous call) would be counted: "
                           "synchronise, then read the clock")


def _explain_benchmark(got: float, durations: list, warmup: int, iters: int) -> str:
    """The message for a wrong time: what the learner returned, if we recognise it, and what to return."""
    timed = durations[warmup:warmup + iters]
    every = durations[:warmup + iters]
    median = "the median of the timed calls"
    guesses = [
        (statistics.median(every), "the median over the warm-up calls too", "time only the last `iters` calls: "
         "the warm-up is there to be thrown away"),
        (statistics.mean(timed), "the mean of the per-call times", "return statistics.median(times): one slow call "
         "(a page fault, another process) pulls the mean but not the median"),
        (min(timed), "the shortest of the timed calls (min)", "return their median, statistics.median(times): the "
         "minimum is the luckiest run, not a typical one"),
        (max(timed), "the longest of the timed calls (max)", "return their median, statistics.median(times): the "
         "maximum is the one slow outlier"),
        (sum(timed), "the total time of the `iters` calls", "time each call on its own and return the median"),
        (statistics.median(timed) * 1000, "the median in milliseconds", "return seconds, as perf_counter gives "
         "them (no * 1000)"),
        (statistics.mean(timed) * 1000, "the mean in milliseconds", f"return {median}, in seconds"),
        (min(timed) * 1000, "the shortest time (min) in milliseconds", f"return {median}, in seconds"),
        (sum(timed) * 1000, "the total in milliseconds", "return the median per call, in seconds"),
        (statistics.mean(every), "the mean over every call, the warm-up included", "time only the last `iters` "
         "calls and return their median"),
        (sum(every), "the total time of every call", "time only the last `iters` calls, each on its own, and "
         "return their median"),
        (statistics.median_low(timed), "the lower of the two middle times", "with an even number of times the "
         "median is the mean of the two middle ones (statistics.median; torch.median returns the lower one)"),
        (statistics.median_high(timed), "the upper of the two middle times", "with an even number of times the "
         "median is the mean of the two middle ones: use statistics.median"),
    ]
    for value, what, advice in guesses:
        if _close(got, value):
            return f"you returned {what}, not {median} — {advice}"
    return (f"the result is not {median} — time each of the last `iters` calls with t0 = time.perf_counter(); "
            "fn(*args); times.append(time.perf_counter() - t0), then return statistics.median(times)")


def _durations(t, warmup: int, iters: int) -> list[float]:
    """Warm-up calls much slower than the timed ones (as real first calls are), timed ones with an outlier so
    mean and median differ, and two spare entries for calls beyond warmup + iters."""
    slow = [0.5 + 0.25 * float(t.rand()) for _ in range(warmup)]
    timed = [0.001 + 0.009 * float(t.rand()) for _ in range(iters)]
    if iters >= 3:
        timed[t.integer(0, iters)] = 0.2 + 0.1 * float(t.rand())
    return slow + timed + [0.05 + 0.01 * float(t.rand()) for _ in range(2)]


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Call fn(*args) `warmup` times without timing; then, `iters` times, read time.perf_counter() before and after "
    "one call and keep the difference; return statistics.median of those differences.",
    "Seconds, not milliseconds. Check iters first: `if iters < 1: raise ValueError(...)`. Synchronise only when "
    "some argument is a CUDA tensor: cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args).",
    "for _ in range(warmup): fn(*args)\n    times = []\n    for _ in range(iters):\n        if cuda: "
    "torch.cuda.synchronize()\n        t0 = time.perf_counter()\n        fn(*args)\n        if cuda: "
    "torch.cuda.synchronize()\n        times.append(time.perf_counter() - t0)\n    return statistics.median(times)",
])
def benchmark(t, fn):
    # (what, warmup, iters, args, CUDA argument): warmup / iters None are left to the defaults 3 and 10
    x, w = t.randn(3, 4, dtype=torch.float32), t.randn(4, 2, dtype=torch.float32)
    cases = [
        ("benchmark(fn, x) with the defaults warmup=3, iters=10", None, None, [x], []),
        ("warmup=2, iters=5 and three arguments (x, w, 'relu')", 2, 5, [x, w, "relu"], []),
        ("warmup=0, iters=4 (an even count: the mean of the two middle times)", 0, t.unseen(4, 6, 9), [x], []),
        ("warmup=4, iters=1", t.unseen(4, 5, 8), 1, [w], []),
        ("no arguments besides fn, warmup=1, iters=7", 1, t.unseen(7, 9, 14), [], []),
        ("x is a CUDA tensor (faked): synchronise before starting and before stopping the clock", 2, 5, [x, w],
         [0]),
        ("(x, w) with x on the CPU and w a CUDA tensor (faked): any CUDA argument calls for synchronising", 1, 4,
         [x, w], [1]),
    ]
    for words, warmup, iters, args, cuda in cases:
        w_, n = 3 if warmup is None else warmup, 10 if iters is None else iters
        durations = _durations(t, w_, n)
        with t.case(words):
            run = t.call(benchmark_run, fn, durations, args, cuda, warmup, iters)
            if not run["args_ok"]:
                raise Mismatch("fn was not called as fn(*args) — pass the positional arguments on unpacked "
                               "(fn(*args)), the same objects every time, and no keyword arguments")
            if run["calls"] != w_ + n:
                raise Mismatch(f"fn was called {run['calls']} times, should be warmup + iters = {w_} + {n} = "
                               f"{w_ + n} — {w_} untimed warm-up calls, then {n} timed ones, and no extra call")
            got = _expect_float(run["result"], "the result", "return statistics.median(times), a float in seconds")
            if "clock" not in run["log"]:
                if "timeit" in run["log"]:
                    raise Mismatch("you timed with timeit and never read time.perf_counter() — call "
                                   "time.perf_counter() yourself right before and right after each call of fn: "
                                   "timeit's own timer and loop are not what the exercise asks")
                raise Mismatch("time.perf_counter() was never read — time each call with time.perf_counter() "
                               "(a monotonic, high-resolution clock; time.time() can jump and is coarser)")
            if cuda:
                _expect_synced(run["log"], w_, cuda)
            elif "sync" in run["log"]:
                raise Mismatch("torch.cuda.synchronize() was called although no argument is a CUDA tensor — "
                               "synchronise only when an argument is a CUDA tensor, not whenever "
                               "torch.cuda.is_available(): CPU work has nothing to wait for (and without CUDA "
                               "synchronize() raises)")
            want = statistics.median(durations[w_:w_ + n])
            if not _close(got, want):
                raise Mismatch(_explain_benchmark(got, durations, w_, n),
                               f"expected {want:.9g} s, got {got:.9g}")
    for iters in (0, -2):
        with t.case(f"iters={iters} raises ValueError"):
            t.raises(ValueError, benchmark_run, fn, [0.001] * 8, [x], [], 1, iters)
    if "cuda" in t.devices:
        with t.case("cuda: a real GPU kernel, timed with the real clock"):
            run = t.call(benchmark_gpu_run, fn)
            got = _expect_float(run["result"], "the result", "return statistics.median(times), a float in seconds")
            if not 0.5 * run["expected"] <= got <= 3 * run["expected"] + 2e-3:
                raise Mismatch(f"a kernel that runs for {run['expected'] * 1e3:.2f} ms was timed at "
                               f"{got * 1e3:.3f} ms — synchronise CUDA before starting and before stopping the "
                               "clock when an argument is a CUDA tensor, and return seconds")


GPU_SLEEP_CYCLES = 2_000_000  # about 1-2 ms of a GPU busy-waiting


def _gpu_sleep(x):
    """A kernel that keeps the GPU busy for GPU_SLEEP_CYCLES clock cycles; returns at once (asynchronous)."""
    torch.cuda._sleep(GPU_SLEEP_CYCLES)
    return x


def benchmark_gpu_run(fn) -> dict:
    """Driver (CUDA only): fn(_gpu_sleep, x on cuda) with the real clock; the result and the kernel's own time,
    measured with CUDA events."""
    with untraced():
        x = torch.ones(4, device="cuda")
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            _gpu_sleep(x)
        end.record()
        torch.cuda.synchronize()
        expected = start.elapsed_time(end) / 5 / 1000
    out = fn(_gpu_sleep, x, warmup=2, iters=5)
    return {"result": _plain(out), "expected": expected}


# ============================================================================================================
# all_reduce_mean
# ============================================================================================================
# Each world is real: WORLD_SIZES processes forked from the learner's process (the notebook's kernel, or the batch
# grader's sandbox) join a gloo process group through a FileStore in a temporary folder (no port to find), run
# every case in order and send their results back through a pipe. The learner's function lives only in that
# process, hence fork. Every process started is killed and reaped when the world is done, also when the learner's
# code hangs (WORLD_TIMEOUT_S), raises, or destroys the process group itself. Budget, measured on 2 CPU cores
# shared with other work: 0.3-0.5 s per world (forks ~25 ms each, gloo rendezvous ~60 ms, five cases ~30 ms,
# destroy ~40 ms), 0.7-1.3 s for the check (benchmarks/checks.py: median 1.13 s on a busy machine); a hang costs
# WORLD_TIMEOUT_S. gloo needs loopback: the batch grader's sandbox brings `lo` up in its network namespace.
WORLD_SIZES = (2, 3)
WORLD_TIMEOUT_S = 20.0       # the whole world, rendezvous and every case
COLLECTIVE_TIMEOUT_S = 10.0  # gloo gives up on a collective a rank never joins
PR_SET_PDEATHSIG = 1
EXITS_FILE = "exits"  # written by the leader: how each rank ended


def _rank_main(fn, rank: int, world_size: int, store_path: str, cases: list, conn: int) -> None:
    """In a forked rank: join the group, run every case, write the results to `conn`. Never returns."""
    import datetime
    import io

    import torch.distributed as dist
    status = 0
    try:
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the driver died: so do we
        except Exception:
            pass
        sys.stdout = sys.stderr = open(os.devnull, "w")  # a kernel's streams belong to the parent
        torch.set_num_threads(1)
        report = {"results": [], "error": "", "stub": False, "destroyed": False, "setup": "", "exit": None,
                  "default_dtype": str(torch.get_default_dtype()).removeprefix("torch.")}
        try:
            with untraced():
                store = dist.FileStore(store_path, world_size)
                dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        except Exception as e:
            report["setup"] = " ".join(str(e).split())[:300]
            cases = []
        for inputs in cases:
            with untraced():
                x = inputs[rank].clone()
                before = x.clone()
            try:
                out = fn(x)
            except NotImplementedError as e:
                report["stub"] = is_stub(e)
                report["error"] = describe_error(e)
                break
            except SystemExit as e:  # sys.exit() / exit(): the rank would have left; say so, with its code
                report["exit"] = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                break
            except Exception as e:
                report["error"] = describe_error(e)
                break
            with untraced():
                changed = not (x.shape == before.shape and x.dtype == before.dtype and bool((x == before).all()))
                if isinstance(out, torch.Tensor):
                    result = {"out": out.detach().clone() if type(out) is torch.Tensor else None,
                              "kind": type(out).__name__, "same": out is x, "changed": changed,
                              "shares": out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()}
                else:
                    result = {"out": None, "kind": kind_of(out), "same": False, "changed": changed, "shares": False}
                report["results"].append(result)
            if not dist.is_initialized():
                report["destroyed"] = True
                break
        with untraced():
            buffer = io.BytesIO()
            torch.save(report, buffer)
            data = buffer.getvalue()
            view = memoryview(data)
            while view:
                view = view[os.write(conn, view):]
            os.close(conn)
            if dist.is_initialized():
                dist.destroy_process_group()
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _leader(fn, world_size: int, store_path: str, cases: list, writers: list) -> None:
    """In a forked process of its own group: one forked process per rank; reaps them, kills them at the
    deadline, and writes how each ended (its exit code, -signal, or None: killed at the deadline) to
    EXITS_FILE next to the store. Never returns."""
    try:
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:
            pass
        pids = []
        for rank, w in enumerate(writers):
            pid = os.fork()
            if pid == 0:
                for other in writers:
                    if other != w:
                        os.close(other)
                _rank_main(fn, rank, world_size, store_path, cases, w)
            pids.append(pid)
        for w in writers:
            os.close(w)
        deadline = time.monotonic() + WORLD_TIMEOUT_S
        alive = set(pids)
        ended = [None] * len(pids)
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    alive.discard(pid)
                    ended[pids.index(pid)] = os.waitstatus_to_exitcode(status)
            time.sleep(0.005)
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        for pid in alive:
            os.waitpid(pid, 0)
        with open(os.path.join(os.path.dirname(store_path), EXITS_FILE), "w") as f:
            f.write(repr(ended))
    finally:
        os._exit(0)


def all_reduce_run(fn, world_size: int, cases: list) -> dict:
    """Driver: fn(x) on every rank of a gloo group of `world_size` forked processes, for each case (a list of one
    input per rank); per rank its results, its error, whether it destroyed the group; whether the world timed out.

    Processes: this one forks a leader (a process group of its own), which forks the ranks, reaps them (noting
    how each ended: a rank that exits early is told from one that hangs) and kills them at WORLD_TIMEOUT_S; this
    one reads their pipes until then (and a little more), gives the leader up to a second to finish, then kills
    the whole group and reaps the leader, whatever happened."""
    import io

    import torch.distributed  # noqa: F401  (imported here, before the fork, once)
    folder = tempfile.mkdtemp(prefix="torchdojo-world-")
    store_path = os.path.join(folder, "store")
    pipes = [os.pipe() for _ in range(world_size)]
    chunks: list[list[bytes]] = [[] for _ in range(world_size)]
    leader = -1
    try:
        leader = os.fork()
        if leader == 0:
            os.setpgid(0, 0)
            for r, _ in pipes:
                os.close(r)
            _leader(fn, world_size, store_path, cases, [w for _, w in pipes])
        try:
            os.setpgid(leader, leader)  # also here: no race with the kill below
        except OSError:
            pass
        for _, w in pipes:
            os.close(w)
        open_fds = {r: rank for rank, (r, _) in enumerate(pipes)}
        deadline = time.monotonic() + WORLD_TIMEOUT_S + 2
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 0.05)
            for r in ready:
                data = os.read(r, 1 << 16)
                if data:
                    chunks[open_fds[r]].append(data)
                else:
                    os.close(r)
                    del open_fds[r]
        timed_out = bool(open_fds)
        for r in open_fds:
            os.close(r)
        reaped = False
        wait_until = min(deadline, time.monotonic() + 1.0)  # the leader reaps the ranks, writes EXITS_FILE
        while not reaped and time.monotonic() < wait_until:
            reaped = os.waitpid(leader, os.WNOHANG)[0] == leader
            time.sleep(0.005)
        exits = None
        try:
            with open(os.path.join(folder, EXITS_FILE)) as f:
                exits = ast.literal_eval(f.read())
        except (OSError, ValueError, SyntaxError):
            pass
    finally:
        if leader > 0:
            try:
                os.killpg(leader, signal.SIGKILL)  # the leader and every rank still there
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.waitpid(leader, 0)
            except ChildProcessError:  # reaped above
                pass
        shutil.rmtree(folder, ignore_errors=True)
    ranks = []
    with untraced():
        for rank in range(world_size):
            data = b"".join(chunks[rank])
            try:
                ranks.append(torch.load(io.BytesIO(data), weights_only=True) if data else None)
            except Exception:
                ranks.append(None)
    if any(r is not None and r["stub"] for r in ranks):
        raise NotAttempted()
    return {"ranks": ranks, "timed_out": timed_out, "exits": exits or [None] * world_size}


def _mean_over_ranks(inputs: list, default_dtype: torch.dtype) -> torch.Tensor:
    """The oracle: the sum over the ranks in float64, divided by their number; an integer input gives the default
    floating dtype (what integer / integer gives in PyTorch), a floating one keeps its dtype."""
    total = torch.stack([x.double() for x in inputs]).sum(0)
    dtype = inputs[0].dtype if inputs[0].is_floating_point() else default_dtype
    return (total / len(inputs)).to(dtype)


def _divisors(outs: list, inputs: list) -> list | None:
    """For each rank, the number its result is the sum over the ranks divided by (rounded to 3 digits); None
    unless every rank's result is the sum divided by some number."""
    total = torch.stack([x.double() for x in inputs]).sum(0).flatten()
    if total.numel() == 0 or float(total.abs().max()) < 1e-6:
        return None
    found = []
    for out in outs:
        if not isinstance(out, torch.Tensor) or out.numel() != total.numel() or not out.dtype.is_floating_point:
            return None
        got = out.double().flatten()
        ratio = float(got @ total) / float(total @ total)  # least squares: got ≈ ratio * total
        if abs(ratio) < 1e-9 or not torch.allclose(got, ratio * total, rtol=1e-4, atol=1e-5):
            return None
        found.append(round(1 / ratio, 3))
    return found


def _explain_mean(got: torch.Tensor, inputs: list, rank: int) -> str:
    total = torch.stack([x.double() for x in inputs]).sum(0)
    n = len(inputs)
    guesses = [
        (total, "the sum over the ranks — divide by the number of ranks, dist.get_world_size()"),
        (total / 2, "the sum divided by 2 — divide by dist.get_world_size(), not a hard-coded number of ranks"),
        (inputs[rank].double(), "this rank's own input: nothing was reduced — dist.all_reduce(y, op=dist.ReduceOp."
         "SUM) on a copy y of the input, then divide"),
        (total / n ** 2, "the mean divided by the number of ranks again — divide once"),
        (torch.div(total, n, rounding_mode="floor"), "a floored mean — integer division (//) drops the fraction: "
         "convert to a floating dtype first, or divide with /"),
    ]
    for value, advice in guesses:
        if value.shape == got.shape and torch.allclose(got.double(), value, rtol=1e-5, atol=1e-6):
            return f"rank {rank} got {advice}"
    return f"rank {rank} got wrong values — the element-wise mean is the SUM over the ranks divided by their number"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _all_reduce_advice(message: str) -> str:
    if "AVG" in message or "Cannot use ReduceOp" in message:
        return "this backend (or PyTorch version) has no ReduceOp.AVG — all_reduce with ReduceOp.SUM, then " \
               "divide by dist.get_world_size(): that works on every backend"
    if "can't be cast" in message or "desired output type" in message:
        return "an integer tensor cannot hold a mean — reduce a floating copy " \
               "(tensor.to(torch.get_default_dtype()))"
    if "not been initialized" in message or "init_process_group" in message or "initialize" in message:
        return "the caller has already joined the process group; use it (dist.all_reduce, dist.get_world_size) " \
               "without initialising or destroying it"
    return ""


_COLLECTIVE_FAILED = ("Connection closed by peer", "Timed out waiting", "Connection reset by peer",
                      "gloo/transport")


def _collective_failed(error: str) -> bool:
    """The error is gloo's: a collective whose partner ranks crashed, left or never came."""
    return any(n in error for n in _COLLECTIVE_FAILED)


@exercise(LESSON, points=2, difficulty=2, minutes=15, budget_s=1.5, hints=[
    "dist.all_reduce(t) overwrites t on every rank with the reduction over all ranks: reduce a copy, not the "
    "caller's tensor.",
    "all_reduce with ReduceOp.SUM, then divide by dist.get_world_size() (that works on every backend; "
    "ReduceOp.AVG only on some, for floating tensors). An integer tensor needs a floating dtype first: "
    "x.to(torch.get_default_dtype()).",
    "y = tensor.clone() if tensor.is_floating_point() else tensor.to(torch.get_default_dtype())\n    "
    "dist.all_reduce(y, op=dist.ReduceOp.SUM)\n    return y / dist.get_world_size()",
])
def all_reduce_mean(t, fn):
    shapes = [((3,), torch.float32, "float32 (3,)"), ((2, 5), torch.float64, "float64 (2, 5)"),
              ((4,), torch.int64, "int64 (4,): the mean is floating"), ((), torch.float32, "a 0-dim float32"),
              ((2, 1, 3), torch.float32, "float32 (2, 1, 3)")]
    for world_size in WORLD_SIZES:
        cases = []
        for shape, dtype, _ in shapes:
            if dtype.is_floating_point:
                cases.append([t.randn(*shape, dtype=dtype) * 3 for _ in range(world_size)])
            else:
                cases.append([t.randint(-20, 20, shape) for _ in range(world_size)])
        with t.case(f"a gloo group of {world_size} CPU processes: every rank, {len(cases)} inputs"):
            run = t.call(all_reduce_run, fn, world_size, cases)
            _expect_world(run, world_size, cases, [w for _, _, w in shapes])


def _expect_world(run: dict, world_size: int, cases: list, words: list) -> None:
    ranks = run["ranks"]
    setup = next((r["setup"] for r in ranks if r is not None and r["setup"]), "")
    if setup:
        raise LearnerError(f"the process group could not be set up here: {setup}\n→ the check could not start "
                           "the processes it needs (no loopback network?) — tell your instructor")
    errors = [(rank, r["error"]) for rank, r in enumerate(ranks) if r is not None and r["error"]]
    own = [(rank, e) for rank, e in errors if not _collective_failed(e)]  # the learner's own, not gloo's echo
    if own:
        rank, error = own[0]
        advice = _all_reduce_advice(error)
        raise LearnerError(error + f"\n→ on rank {rank} of {world_size}" + (f": {advice}" if advice else ""))
    for rank, report in enumerate(ranks):
        if report is not None and report["destroyed"]:
            raise Mismatch(f"rank {rank}: your function destroyed the process group — it belongs to the caller, "
                           "who still needs it: do not call dist.destroy_process_group() (nor init it)")
    for rank, report in enumerate(ranks):
        code = report["exit"] if report is not None else run["exits"][rank]
        if code is not None and (report is None or report["exit"] is not None):
            how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with exit code {code}"
            raise Mismatch(f"rank {rank} {how} before all_reduce_mean returned — a function never ends the "
                           "process it runs in (no sys.exit(), exit() or os._exit()): return the averaged "
                           "tensor on every rank")
    if run["timed_out"] or any(r is None for r in ranks):
        missing = [i for i, r in enumerate(ranks) if r is None]
        raise Mismatch(f"rank(s) {missing or 'some'} did not finish within {WORLD_TIMEOUT_S:.0f} s — the function "
                       "hangs on some rank: every rank must call dist.all_reduce once per call, and nothing may wait "
                       "forever")
    if errors:
        rank, error = errors[0]
        raise Mismatch(f"rank {rank}'s collective failed because another rank did not take part — every rank must "
                       "call dist.all_reduce the same number of times (a collective waits for all ranks: one that "
                       "skips it, say under `if dist.get_rank() == 0`, leaves the others waiting)",
                       error.splitlines()[0])
    # All ranks are CPU processes of a gloo group, so a result built on the CPU (torch.tensor(x.tolist())) cannot
    # show here. A CUDA world (NCCL, one GPU per rank, spawned rather than forked: CUDA does not survive a fork)
    # would catch it with expect_tensor(..., device=<the input's device>) below; there is no such world yet.
    for i, inputs in enumerate(cases):
        default = getattr(torch, ranks[0]["default_dtype"])
        expected = _mean_over_ranks(inputs, default)
        divisors = _divisors([r["results"][i]["out"] for r in ranks], inputs)
        if divisors is not None and len(set(divisors)) > 1:
            by = ", ".join(f"rank {r} by {d:g}" for r, d in enumerate(divisors))
            guess = " (dist.get_rank() + 1?)" if divisors == [float(r + 1) for r in range(world_size)] else ""
            raise Mismatch(f"{words[i]}: the ranks divided the sum by different numbers, {by}{guess}, in a group "
                           f"of {world_size} — every rank must get the same mean: divide by dist.get_world_size(), "
                           "the number of ranks, on every rank")
        for rank, report in enumerate(ranks):
            r = report["results"][i]
            what = f"{words[i]}: rank {rank}'s result"
            if r["changed"]:
                raise Mismatch(f"{words[i]}: rank {rank}'s input was changed in place — dist.all_reduce overwrites "
                               "the tensor it is given: reduce a copy (y = tensor.clone()) and leave the caller's "
                               "tensor alone")
            if r["out"] is None:
                raise Mismatch(f"{what} should be a torch.Tensor, got {r['kind']} — return the averaged tensor")
            if r["same"] or (r["shares"] and r["out"].numel() > 0):
                raise Mismatch(f"{what} is the input tensor itself (or a view of it) — return a new tensor: "
                               "reduce a copy, then divide")
            got = r["out"]
            if not inputs[0].is_floating_point() and got.is_floating_point() and got.dtype != default:
                raise Mismatch(f"{what} has dtype {got.dtype}, should be torch.get_default_dtype() ({default}) — "
                               "the mean of an integer tensor takes the default floating dtype, as integer / "
                               "integer does in PyTorch: convert with .to(torch.get_default_dtype())"
                               + (", not .double()" if got.dtype == torch.float64 else ""))
            try:
                expect_tensor(got, expected, atol=1e-5, rtol=1e-5, device="cpu", what=what)
            except Mismatch as e:
                if got.shape == expected.shape and got.dtype.is_floating_point == expected.dtype.is_floating_point:
                    raise Mismatch(f"{e.message}\n→ {_explain_mean(got, inputs, rank)}", e.detail) from None
                if not got.dtype.is_floating_point and expected.dtype.is_floating_point:
                    raise Mismatch(f"{e.message}\n→ the mean of integers has a fraction: return a floating tensor "
                                   "(x.to(torch.get_default_dtype()) before reducing, or divide with / — never //)",
                                   e.detail) from None
                raise


# ============================================================================================================
# autocast_train_step
# ============================================================================================================
# The step: model (Linear(6, 16), ReLU, Linear(16, 4)) with its mode as handed over, gradients left over from an
# earlier step (so a missing zero_grad shows), cross-entropy, SGD with momentum. Hooks on the first Linear see its
# output dtype and the autocast state in the forward and in the backward; the loss function sees its inputs and
# the autocast state; a TorchFunctionMode sees every .to / .cpu / .cuda on the batch and the parameters.
# `device` is handed over with an index, torch.device("cpu", 0) or torch.device("cuda", 0) (_handed_device): on
# the CPU .to(device) then copies, and a hard-coded "cpu" or "cuda" (no index) shows up as a move to another
# device, as it would on a GPU. The indexed device also keeps the CUDA run honest about learners who pass
# str(device) ("cuda:0") as autocast's device_type: torch 2.14 accepts an indexed device_type (cpu:0 and cuda:0
# both turn autocast on for their device type, checked), so such code passes, as it works; a torch that refused
# it would fail it here on CUDA. On the CPU "cpu:0" is accepted by every recent torch, so only a CUDA run can
# tell.
AUTOCAST_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}
SCALE = 2.0 ** 10


def _step_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


class _CountingSGD(torch.optim.SGD):
    """SGD that counts its steps."""

    def __init__(self, params):
        super().__init__(params, lr=0.1, momentum=0.9)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


class _ProbeLoss(nn.Module):
    """Cross-entropy that notes what it was given and whether autocast was on."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type, self.seen = device_type, []

    def forward(self, logits, y):
        self.seen.append({"y": y, "autocast": torch.is_autocast_enabled(self.device_type)})
        return F.cross_entropy(logits, y)


class _RecordingScaler:
    """Stands in for torch.amp.GradScaler with a fixed scale; notes the order of its calls."""

    def __init__(self, scale: float):
        self._scale, self.log, self._unscaled = scale, [], False

    def scale(self, outputs):
        self.log.append("scale")
        return outputs * self._scale

    def unscale_(self, optimizer) -> None:
        self.log.append("unscale_")
        self._divide(optimizer)

    def _divide(self, optimizer) -> None:
        if not self._unscaled:
            self._unscaled = True
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.div_(self._scale)

    def step(self, optimizer, *args, **kwargs):
        self.log.append("step")
        self._divide(optimizer)
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None) -> None:
        self.log.append("update")
        self._unscaled = False

    def get_scale(self) -> float:
        return self._scale

    def is_enabled(self) -> bool:
        return True


def _device_of(args: tuple, kwargs: dict):
    for a in (*args, kwargs.get("device")):
        if isinstance(a, (str, torch.device)):
            try:
                return torch.device(a)
            except (RuntimeError, TypeError):
                return None
        if isinstance(a, torch.Tensor):
            return a.device
    return None


class _Moves(TorchFunctionMode):
    """Notes every move (.to with a device, .cpu, .cuda) of the batch and the parameters, and its target."""

    def __init__(self, watched: list):
        super().__init__()
        self.watched, self.targets = watched, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = canonical_name(func)
        if name in ("to", "cpu", "cuda") and args and any(args[0] is w for w in self.watched):
            target = torch.device("cpu") if name == "cpu" else torch.device("cuda") if name == "cuda" else \
                _device_of(args[1:], kwargs)
            if target is not None:
                self.targets.append(str(target))
        return func(*args, **kwargs)


def _random_state(t, template: nn.Module) -> dict:
    return {k: t.randn(*v.shape, dtype=v.dtype) * 0.5 for k, v in template.state_dict().items()}


def _step_setup(state: dict, grads: list, device, training: bool):
    model = _step_net()
    model.load_state_dict(state)
    model = model.to(device).train(training)
    for p, g in zip(model.parameters(), grads):
        p.grad = g.to(device).clone()  # left over from an earlier step
    return model, _CountingSGD(model.parameters())


def _handed_device(device: str) -> torch.device:
    """The `device` argument the learner gets for a device of t.devices: always with an index."""
    kind = torch.device(device).type
    return torch.device(kind, 0) if torch.device(device).index is None else torch.device(device)


def autocast_run(fn, state: dict, grads: list, x, y, device: str, training: bool, scaler: str) -> dict:
    """Driver: fn(model, (x, y), loss_fn, optimizer, device[, scaler]) on CPU batches; the returned value, the
    parameters after, the dtypes and autocast states seen, the optimizer's steps, the scaler's calls, the moves.
    scaler: "" (none), "real" (torch.amp.GradScaler) or "recording" (_RecordingScaler)."""
    with untraced():
        kind = torch.device(device).type
        dev = _handed_device(device)
        model, optimizer = _step_setup(state, grads, dev, training)
        params = list(model.parameters())
        seen = {"forward": [], "backward": []}

        def forward_hook(module, inputs, out):
            seen["forward"].append({"x": inputs[0], "dtype": str(out.dtype).removeprefix("torch."),
                                    "autocast": torch.is_autocast_enabled(kind)})
            if out.requires_grad:
                out.register_hook(lambda g: seen["backward"].append(torch.is_autocast_enabled(kind)))

        model[0].register_forward_hook(forward_hook)
        loss_fn = _ProbeLoss(kind)
        scale = {"": None, "real": torch.amp.GradScaler(kind, init_scale=SCALE),
                 "recording": _RecordingScaler(SCALE)}[scaler]
        moves = _Moves([x, y, *params])
        args = (model, (x, y), loss_fn, optimizer, dev) + ((scale,) if scale is not None else ())
    with moves:
        out = fn(*args)
    with untraced():
        forward = seen["forward"]
        return {
            "loss": _plain(out), "params": [p.detach().cpu().clone() for p in model.parameters()],
            "param_devices": sorted({p.device.type for p in model.parameters()}), "training": model.training,
            "same_params": all(a is b for a, b in zip(model.parameters(), params)),
            "forward": [{"dtype": f["dtype"], "autocast": f["autocast"]} for f in forward],
            "x_unmoved": any(f["x"] is x for f in forward),
            "loss_calls": [{"autocast": s["autocast"], "y_unmoved": s["y"] is y} for s in loss_fn.seen],
            "backward": seen["backward"], "steps": optimizer.steps, "targets": moves.targets,
            "scaler_log": scale.log if isinstance(scale, _RecordingScaler) else [],
        }


def _reference_step(state, grads, x, y, device: str, training: bool, variant: str = "right") -> dict:
    """The step written out: the parameters after it and the loss. Variants: 'no_zero_grad'."""
    model, optimizer = _step_setup(state, grads, device, training)
    x, y = x.to(device), y.to(device)
    if variant != "no_zero_grad":
        optimizer.zero_grad()
    kind = torch.device(device).type
    with torch.autocast(device_type=kind, dtype=AUTOCAST_DTYPE[kind]):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return {"params": [p.detach().cpu().clone() for p in model.parameters()], "loss": loss.item()}


def _same_params(got: list, want: list) -> bool:
    return all(g.shape == w.shape and torch.allclose(g, w, rtol=1e-4, atol=1e-6) for g, w in zip(got, want))


def _expect_step(run: dict, ref: dict, state, grads, x, y, device: str, training: bool, scaler: str) -> None:
    kind = torch.device(device).type
    want_dtype = str(AUTOCAST_DTYPE[kind]).removeprefix("torch.")
    hard = [d for d in run["targets"] if torch.device(d).type != kind or torch.device(d).index is None]
    if hard:
        raise Mismatch(f"something was moved to '{hard[0]}', a device written into the code — move the batch with "
                       "x.to(device), y.to(device) (the `device` argument), and leave the model where it is")
    if run["x_unmoved"]:
        raise Mismatch("the inputs x were not moved to `device` (or the moved copy was not used) — x = "
                       "x.to(device): .to() returns a new tensor; on a GPU the model's weights and a CPU batch "
                       "would not mix")
    if any(c["y_unmoved"] for c in run["loss_calls"]):
        raise Mismatch("the labels y were not moved to `device` (or the moved copy was not used) — y = "
                       "y.to(device) too, or on a GPU the loss mixes a GPU tensor with a CPU one")
    if len(run["forward"]) != 1:
        raise Mismatch(f"the model ran {len(run['forward'])} times — one forward pass per step")
    forward = run["forward"][0]
    if not forward["autocast"]:
        raise Mismatch(f"the forward pass did not run under autocast (a Linear gave {forward['dtype']}) — wrap the "
                       f"forward and the loss in `with torch.autocast(device_type=device.type, dtype=...):`")
    if forward["dtype"] != want_dtype:
        raise Mismatch(f"on {kind} the forward ran in {forward['dtype']} — autocast with dtype=torch.{want_dtype} "
                       "there (bfloat16 on the CPU, float16 on CUDA: choose it from device.type)")
    if len(run["loss_calls"]) != 1:
        raise Mismatch(f"loss_fn was called {len(run['loss_calls'])} times — once per step")
    if not run["loss_calls"][0]["autocast"]:
        raise Mismatch("the loss was computed outside autocast — compute it inside the same `with torch.autocast"
                       "(...)` block as the forward pass (autocast runs it in float32 where that is safer)")
    if not run["backward"]:
        raise Mismatch("no gradient reached the model — call backward on the loss (scaler.scale(loss).backward() "
                       "when a scaler is given)")
    if any(run["backward"]):
        raise Mismatch("backward ran inside the autocast block — leave the `with torch.autocast(...)` block before "
                       "calling backward: autocast is for the forward pass and the loss only")
    if scaler == "recording":
        log = run["scaler_log"]
        if "scale" not in log:
            raise Mismatch("a scaler was given but the loss was not scaled — scaler.scale(loss).backward() instead "
                           "of loss.backward(), then scaler.step(optimizer) and scaler.update()")
        if "step" not in log:
            raise Mismatch("a scaler was given but scaler.step(optimizer) was not called — it unscales the gradients "
                           "and skips the step when they overflowed; call it instead of optimizer.step()")
        if "update" not in log:
            raise Mismatch("scaler.update() was not called after scaler.step(optimizer) — it adapts the scale for "
                           "the next step")
        order = [e for e in log if e != "unscale_"]
        if order != ["scale", "step", "update"]:
            raise Mismatch(f"the scaler's calls came in the order {order} — scaler.scale(loss).backward(), then "
                           "scaler.step(optimizer), then scaler.update(), each once")
    if run["steps"] != 1:
        raise Mismatch(f"the optimizer stepped {run['steps']} times — once per step (with a scaler, "
                       "scaler.step(optimizer) steps it: no optimizer.step() besides)")
    if run["training"] != training:
        now, was = ("training", "eval") if run["training"] else ("eval", "training")
        raise Mismatch(f"the model was handed over in {was} mode and left in {now} mode — leave the mode as it is "
                       "(no model.train() or model.eval() in the step: the caller chose it)")
    if run["param_devices"] != [kind] or not run["same_params"]:
        raise Mismatch(f"the model's parameters are now on {run['param_devices']} (or were replaced) — leave the "
                       "model where it is: move the batch, not the model")
    if not _same_params(run["params"], ref["params"]):
        if _same_params(run["params"], _reference_step(state, grads, x, y, device, training, "no_zero_grad")["params"]):
            raise Mismatch("the gradients of an earlier step were added to this one's — call optimizer.zero_grad() "
                           "before backward")
        if scaler:
            raise Mismatch("the parameters after the step differ from the reference step — with a scaler: "
                           "scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()")
        raise Mismatch("the parameters after the step differ from the reference step — zero_grad, forward and loss "
                       "under autocast, loss.backward(), optimizer.step()")
    got = _expect_float(run["loss"], "the returned loss", "return loss.item()")
    if not _close(got, ref["loss"], 1e-5):
        if scaler and _close(got, ref["loss"] * SCALE, 1e-4):
            raise Mismatch("you returned the scaled loss — return the loss itself (loss.item()), not "
                           "scaler.scale(loss)", f"expected {ref['loss']:.6g}, got {got:.6g}")
        raise Mismatch("the returned loss is not this step's loss — return loss.item() of the loss computed under "
                       "autocast, before the step", f"expected {ref['loss']:.6g}, got {got:.6g}")


_SCALER_ERRORS = [  # what torch.amp.GradScaler asserts, and the mistake behind it
    ("No inf checks were recorded prior to update", "scaler.update() was called but the optimizer did not step "
     "through scaler.step(optimizer) — with a scaler: scaler.scale(loss).backward(), scaler.step(optimizer) "
     "(not optimizer.step(): it unscales the gradients and skips the step if they overflowed), scaler.update()"),
    ("No inf checks were recorded for this optimizer", "scaler.step(optimizer) found no gradients — they were "
     "cleared between backward and the step (zero_grad in the wrong place) or backward never ran: zero_grad "
     "first, then scaler.scale(loss).backward(), then scaler.step(optimizer)"),
    ("unscale_() has already been called", "scaler.unscale_(optimizer) ran twice in one step — at most once, "
     "before scaler.step(optimizer) (which unscales by itself)"),
    ("step() has already been called since the last update", "scaler.step(optimizer) ran twice in one step — "
     "once, then scaler.update()"),
    ("Attempted unscale_ but _scale is None", "the scaler was used without scaling the loss — "
     "scaler.scale(loss).backward() first"),
]


def _scaler_diagnosis(message: str) -> str:
    """What the learner did wrong with the GradScaler, from the assertion it raised ('' if not a scaler's)."""
    return next((diagnosis for error, diagnosis in _SCALER_ERRORS if error in message), "")


@exercise(LESSON, points=3, difficulty=2, minutes=20, hints=[
    "Move the batch: x, y = x.to(device), y.to(device). Zero the gradients. Then the forward pass and the loss "
    "inside `with torch.autocast(device_type=device.type, dtype=...)`; backward and the step after the block.",
    "dtype: torch.bfloat16 on the CPU, torch.float16 on CUDA. With a scaler: scaler.scale(loss).backward(), "
    "scaler.step(optimizer), scaler.update(); without one: loss.backward(), optimizer.step(). Return loss.item().",
    "dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16\n    with torch.autocast(device_type="
    "device.type, dtype=dtype):\n        loss = loss_fn(model(x), y)\n    if scaler is None: loss.backward(); "
    "optimizer.step()\n    else: scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()",
])
def autocast_train_step(t, fn):
    cases = [(True, "", "a model in training mode, no scaler"),
             (False, "", "a model handed over in eval mode, no scaler"),
             (True, "real", "with a torch.amp.GradScaler"),
             (False, "recording", "with a scaler that records its calls, model in eval mode")]
    template = _step_net()
    for device in t.devices:
        if device not in AUTOCAST_DTYPE:
            continue
        for training, scaler, words in cases:
            state = _random_state(t, template)
            grads = [t.randn(*p.shape, dtype=torch.float32) for p in template.parameters()]
            n = t.unseen(5, 6, 12)
            x, y = t.randn(n, 6, dtype=torch.float32) * 2, t.randint(0, 4, (n,))
            with t.case(f"{device}: {words}"):
                try:
                    run = t.call(autocast_run, fn, state, grads, x, y, device, training, scaler)
                except LearnerError as e:
                    diagnosis = _scaler_diagnosis(str(e)) if scaler else ""
                    if diagnosis:
                        raise LearnerError(f"{diagnosis}\n{e}") from None
                    raise
                ref = _reference_step(state, grads, x, y, device, training)
                _expect_step(run, ref, state, grads, x, y, device, training, scaler)
