"""The untrusted side: a zygote that forks one sandbox process per submission, and what runs inside it.

The zygote is a fresh interpreter with a scrubbed environment (it never sees the hidden seed): it imports
torch, the grader and the lesson's imports, runs the lesson's teaching cells once, then waits for the judges'
requests. Each sandbox is a fork of it, so it starts in milliseconds with the lesson already executed; it
isolates itself (new session, rlimits, no network, private /tmp, sensitive folders hidden, an unprivileged
uid when the zygote runs as root), executes the submission's answer cells, then serves calls: the judge
names a target (the learner's object or a driver) and plain arguments, the sandbox runs it with
`invoke_here` and replies with plain data or the exception's kind and message.

    python -m grader.grading.sandbox LESSON_NOTEBOOK FD [FD ...]
"""
from __future__ import annotations

import __future__
import ast
import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from pathlib import Path

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    _libc.prctl(option, arg, 0, 0, 0)


# --- the zygote ----------------------------------------------------------------------------------------
def zygote(lesson_path: str, fds: list[int]) -> None:
    """Prepare once, then fork a sandbox for every "spawn" request from a judge."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)     # the grader died: so do we
    _prctl(PR_SET_CHILD_SUBREAPER, 1)            # orphans of sandboxes come to us to be reaped
    judges = [socket.socket(fileno=fd) for fd in fds]
    namespace, notes = prepare(lesson_path)
    for s in judges:
        s.sendall(json.dumps({"op": "ready", "notes": notes}).encode())
    statuses: dict[int, int] = {}
    while judges:
        _reap(statuses)
        ready, _, _ = select.select(judges, [], [], 0.2)
        for s in ready:
            try:
                msg, fds_in, _, _ = socket.recv_fds(s, 65536, 1)
            except OSError:
                msg, fds_in = b"", []
            if not msg:
                judges.remove(s)
                s.close()
                continue
            request = json.loads(msg)
            if request["op"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    for other in judges:
                        other.close()
                    _child(fds_in[0], request, namespace)  # never returns
                os.close(fds_in[0])
                s.sendall(json.dumps({"pid": pid}).encode())
            elif request["op"] == "wait":
                s.sendall(json.dumps({"status": _wait(request["pid"], statuses)}).encode())
    os._exit(0)


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status


def _wait(pid: int, statuses: dict[int, int], timeout: float = 3.0):
    end = time.monotonic() + timeout
    while pid not in statuses and time.monotonic() < end:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                statuses[pid] = status
                break
        except ChildProcessError:
            break
        time.sleep(0.005)
    return statuses.pop(pid, None)


def prepare(lesson_path: str):
    """Import what the lesson imports and run its teaching cells (trusted code) once; quiet, plots on Agg."""
    import contextlib
    import io
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import torch
    torch.set_num_threads(1)  # forked children must not inherit an OpenMP pool (and 1 core each is fair)
    import grader.runner  # noqa: F401  (and the registry with every check)
    from grader.registry import exercises
    exercises()
    from grader.grading.submission import Lesson
    lesson = Lesson.load(os.path.basename(lesson_path).removesuffix(".ipynb"),
                         lessons_dir=Path(os.path.dirname(os.path.abspath(lesson_path))))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "display": _display}
    shell = _NoIPython(namespace)
    namespace["get_ipython"] = lambda: shell
    notes = []
    sink = io.StringIO()
    for i, source in enumerate(lesson.teaching):
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            error = run_cell(source, namespace, f"<lesson cell {i}>")
        if error is not None:  # a teaching cell that fails here fails for every learner alike
            notes.append(f"teaching cell {i} raised {type(error).__name__}: {str(error)[:120]}")
        sink.seek(0)
        sink.truncate()
        import matplotlib.pyplot as plt
        plt.close("all")
    _warm_up()
    import gc
    gc.collect()
    gc.freeze()  # the forked sandboxes' collections then leave the zygote's objects (and their pages) alone
    return namespace, notes


def _warm_up() -> None:
    """Pay once, here, what torch does lazily on first use (the first meta-device op imports sympy: ~1 s)."""
    import torch

    from grader.tracing import Tracer
    with Tracer({}, watch_devices=True):
        for device in ("cpu", "meta"):
            x = torch.randn(3, 4, dtype=torch.float64).to(device).requires_grad_(True)
            y = ((x * x).sum(dim=1, keepdim=True) - 2 * x @ x.T[:, :1]).clamp_min(0) / x.norm()
            if device == "cpu":
                torch.autograd.grad(y.sum(), x)


def run_cell(source: str, namespace: dict, filename: str) -> BaseException | None:
    """Run a notebook cell in `namespace` one top-level statement at a time, so that a statement that raises
    does not cost the definitions made by the others (one cell may define two exercises). Returns the first
    exception raised, or None."""
    try:
        statements = ast.parse(_python(source), filename).body
    except Exception as e:  # SyntaxError: nothing of the cell runs, as in Jupyter
        return e
    first = None
    for statement in statements:
        try:
            exec(_compile(ast.Module([statement], type_ignores=[]), filename), namespace)
        except BaseException as e:  # SystemExit, KeyboardInterrupt and the rest: this statement only
            if first is None:
                first = e
    return first


_FUTURE = 0  # the __future__ features cells turned on: they stay on for the statements and cells after, as in IPython


def _compile(tree: ast.Module, filename: str):
    global _FUTURE
    code = compile(tree, filename, "exec", _FUTURE, dont_inherit=True)  # nothing from this module's own imports
    for name in __future__.all_feature_names:
        if code.co_flags & getattr(__future__, name).compiler_flag:
            _FUTURE |= getattr(__future__, name).compiler_flag
    return code


def _display(*objects, **kwargs) -> None:
    """Jupyter's display(): nothing is shown while grading (output is discarded anyway)."""


class _NoIPython:
    """What `get_ipython()` returns while grading: the part of IPython's shell a notebook cell plausibly uses.

    %time, %%time and %%capture run their code in the notebook's namespace, as in Jupyter; other magics
    (%matplotlib, %pip, %timeit, %load_ext, ...) and shell commands (!cmd) do nothing; `user_ns` is the
    namespace; anything else raises an AttributeError that says it is not available while grading."""

    def __init__(self, namespace: dict):
        self.user_ns = namespace

    def run_line_magic(self, name: str, line: str, *args, **kwargs):
        if name == "time":  # `y = %time f(x)` gives y the value of f(x)
            try:
                expression = compile(line, "<%time>", "eval", dont_inherit=True)
            except SyntaxError:
                return self._run(line, "<%time>")
            return eval(expression, self.user_ns)
        if name in ("sx", "system"):
            return self.getoutput(line)
        return None

    def run_cell_magic(self, name: str, line: str, cell: str, *args, **kwargs):
        if name in ("time", "capture"):
            return self._run(cell, f"<%%{name} cell>")
        return None

    def magic(self, arg_s: str):
        name, _, line = arg_s.lstrip("%").partition(" ")
        return self.run_line_magic(name, line)

    def system(self, cmd: str, *args, **kwargs) -> None:
        """!cmd: shell commands do not run while grading (there is nothing to install, no network)."""

    def getoutput(self, cmd: str, *args, **kwargs):
        raise RuntimeError(f"the output of a shell command (`x = !{cmd}`) is not available while grading — "
                           "compute what you need in Python inside your answer cell")

    def _run(self, source: str, filename: str) -> None:
        error = run_cell(source, self.user_ns, filename)
        if error is not None:
            raise error

    def __getattr__(self, name: str):
        raise AttributeError(f"get_ipython().{name} is not available while grading (only magics, shell "
                             "commands and user_ns are) — take it out of your answer cell")


def _python(source: str) -> str:
    """IPython syntax (magics, !shell, ?help) -> plain Python that calls get_ipython() (see _NoIPython)."""
    if not any(c in source for c in "%!?"):
        return source
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:
        return source


# --- one sandbox ---------------------------------------------------------------------------------------
def _child(fd: int, request: dict, namespace: dict) -> None:
    """Isolate this freshly forked process, run the answer cells, serve calls. Always ends with os._exit."""
    try:
        sock = socket.socket(fileno=fd)
        notes = isolate(request, keep=fd)
        serve(sock, namespace, notes)
    except BaseException:
        pass
    os._exit(0)


def _loopback_up() -> bool:
    """Bring up `lo` in a new network namespace (it starts down): code may still talk to itself, as
    torch.distributed's gloo backend must, but to nothing outside the sandbox."""
    import fcntl
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", b"lo", 0)), 16)[0]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
        return True
    except OSError:
        return False


def isolate(config: dict, keep: int) -> list[str]:
    """New session, quiet stdio, only our socket open, rlimits, no network, private /tmp, hidden folders,
    no new privileges, an unprivileged uid (when root). Returns what could not be done."""
    notes = []
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
    root = os.geteuid() == 0
    if root:
        if _libc.unshare(CLONE_NEWNET) != 0:
            notes.append("no network namespace")
        elif not _loopback_up():
            notes.append("loopback down: process groups (lesson 12) cannot meet")
        if _libc.unshare(CLONE_NEWNS) == 0 and _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
            notes += _hide(config)
        else:
            notes.append("no mount namespace: folders are not hidden")
    mem = int(config.get("memory_mb", 2048)) * 2**20
    limits = {
        resource.RLIMIT_AS: _vm_size() + mem,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_FSIZE: int(config.get("tmp_mb", 64)) * 2**20,
        resource.RLIMIT_CPU: int(config.get("cpu_s", 600)),
        resource.RLIMIT_NOFILE: 256,
    }
    if root and config.get("uid"):
        limits[resource.RLIMIT_NPROC] = int(config.get("nproc", 64))
    for which, value in limits.items():
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            notes.append(f"rlimit {which} not set")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if root and config.get("uid"):
        uid = int(config["uid"])
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by setuid, so set after it
    if os.getppid() == 1:
        os._exit(0)
    import tempfile
    os.chdir("/tmp" if root else tempfile.mkdtemp(prefix="sandbox-", dir=config.get("workdir")))
    os.environ["HOME"] = os.environ["TMPDIR"] = tempfile.tempdir = os.getcwd()
    return notes


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _hide(config: dict) -> list[str]:
    """Lay an empty tmpfs over every folder to hide, a private one over /tmp and /dev/shm, and (for the
    unprivileged uid) one over each closed folder on the way to what the sandbox needs (/root, mode 700, above
    /root/.pyenv); then bind back every needed folder that was inside one (a virtualenv under /tmp, the
    interpreter under /root). Returns what could not be done."""
    needed = _needed(config)
    covers = {os.path.realpath(p): b"size=1m,mode=755" for p in config.get("hide", [])}
    if config.get("uid"):
        covers.update(dict.fromkeys(_closed_ancestors(needed), b"size=1m,mode=755"))
    covers.update(dict.fromkeys(["/tmp", "/dev/shm"], f"size={config.get('tmp_mb', 64)}m,mode=1777".encode()))
    notes = []
    for path in sorted(covers, key=len):  # parents first
        keep = [n for n in needed if _inside(n, path)]
        if path in keep:
            notes.append(f"not hidden (the sandbox needs it): {path}")
            continue
        if not os.path.isdir(path):  # gone, or already under a hidden parent
            continue
        fds = [(n, os.open(n, os.O_PATH)) for n in keep if os.path.isdir(n)]
        try:
            if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, covers[path]) != 0:
                notes.append(f"could not hide {path}")
                continue
            for n, fd in fds:
                os.makedirs(n, exist_ok=True)
                if _libc.mount(f"/proc/self/fd/{fd}".encode(), n.encode(), None, MS_BIND | MS_REC, None) != 0:
                    notes.append(f"could not lay {n} back")
        finally:
            for _, fd in fds:
                os.close(fd)
    return notes


def _needed(config: dict) -> list[str]:
    """The folders the sandbox must still see, resolved, the topmost only (not site-packages inside a venv)."""
    needed = sorted({os.path.realpath(p) for p in config.get("needed", [])})
    return [n for n in needed if not any(_inside(n, m) and n != m for m in needed)]


def _closed_ancestors(needed: list[str]) -> set[str]:
    """The first folder above each needed one that others may not enter (no o+x), e.g. /root."""
    closed = set()
    for path in needed:
        parts = path.strip("/").split("/")
        for k in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:k])
            try:
                if not os.stat(ancestor).st_mode & 0o001:
                    closed.add(ancestor)
                    break
            except OSError:
                break
    return closed


def probe_isolation(config: dict) -> list[tuple[str, bool, str]]:
    """Isolate a throwaway child exactly as a sandbox is isolated, and ask it what it can see: a list of
    (protection, active?, what the submissions can do without it)."""
    tmp = os.stat("/tmp")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            isolate(config, keep=w)
            visible = [p for p in config.get("hide", []) if _shows_more_than(p, _needed(config))]
            inner = os.stat("/tmp")
            report = [
                ("separate uid", bool(config.get("uid")) and os.getuid() == config["uid"],
                 "submissions run as the grading user: they can read what it can and signal its processes"),
                ("no network", {name for _, name in socket.if_nameindex()} <= {"lo"},
                 "submissions can reach the network"),
                ("hidden folders", not visible, "submissions can read " + ", ".join(visible)),
                ("private /tmp", (inner.st_dev, inner.st_ino) != (tmp.st_dev, tmp.st_ino),
                 "submissions share /tmp with the host"),
            ]
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return [tuple(item) for item in json.loads(data)] if data else [("isolation probe", False, "it crashed")]


def _shows_more_than(path: str, needed: list[str]) -> bool:
    """True when `path` holds anything besides the way down to the needed folders laid back into it."""
    try:
        entries = os.listdir(path)
    except OSError:
        return False
    for entry in entries:
        full = os.path.join(path, entry)
        below = [n for n in needed if _inside(n, full)]
        if not below or (full not in below and _shows_more_than(full, below)):
            return True
    return False


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 8 * 2**30


def serve(sock: socket.socket, namespace: dict, notes: list[str]) -> None:
    """Run the answer cells the judge sends, report which exercises exist, then answer calls until EOF."""
    import random

    import torch

    from grader.grading import wire
    from grader.runner import LearnerError, NotAttempted, describe_error, invoke_here
    from grader.compare import Mismatch
    from grader.tracing import MixedDevices

    send, recv, encode, decode = wire.send, wire.recv, wire.encode, wire.decode  # before learner code runs
    enable_grad = torch.enable_grad
    program = recv(sock)
    torch.manual_seed(0)
    random.seed(0)
    try:
        import numpy
        numpy.random.seed(0)
    except ImportError:
        pass
    cells = []
    for i, name, source in program["cells"]:
        if i in program["skip"]:
            continue
        send(sock, {"op": "cell", "i": i})
        error = run_cell(source, namespace, f"<answer cell {name}>")
        cells.append({"i": i, "error": "" if error is None else describe_error(error)})
    defined = {n: n in namespace for n in program["names"]}
    send(sock, {"op": "ready", "cells": cells, "defined": defined, "notes": notes})

    def resolve(tag):
        if tag["__w"] == "learner":
            return namespace[tag["name"]]
        return wire.resolve_ref(str(tag["mod"]), str(tag["qual"]))

    while True:
        try:
            request = recv(sock)
        except wire.Closed:
            return
        try:
            fn = decode(request["target"], resolve)
            args = decode(request["args"], resolve)
            kwargs = decode(request["kwargs"], resolve)
            with enable_grad():
                result = invoke_here(request["forbidden"], fn, args, kwargs, request["watch"])
            reply = {"ok": True, "value": encode(result)}
        except NotAttempted:
            reply = {"ok": False, "kind": "NotAttempted"}
        except Mismatch as e:
            reply = {"ok": False, "kind": "Mismatch", "message": str(e.message)}
        except MixedDevices as e:
            reply = {"ok": False, "kind": "MixedDevices", "name": str(e.name), "devices": sorted(map(str, e.devices))}
        except LearnerError as e:
            reply = {"ok": False, "kind": "LearnerError", "message": str(e)}
        except BaseException as e:  # SystemExit, KeyboardInterrupt, a result that cannot be sent
            reply = {"ok": False, "kind": "LearnerError", "message": describe_error(e)}
        send(sock, reply)


if __name__ == "__main__":
    zygote(sys.argv[1], [int(fd) for fd in sys.argv[2:]])
