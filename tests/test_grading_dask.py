"""Grading on a real Dask cluster (`grade --scheduler`): a scheduler and two workers started with the `dask`
command on this machine. The same files as a local run, a worker killed mid-batch costs nothing, a worker with
another grader version is refused, a wrong address is one clear line."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adversarial.build import notebook, solution_answers, write
from grader.build import ROOT
from grader.grading.batch import grader_version
from grader.grading.submission import Lesson

distributed = pytest.importorskip("distributed")

DASK = str(Path(sys.executable).parent / "dask")
WRONG = "def pick_device(prefer=None):\n    return torch.device('cpu')\n"
NO_DASK = ("import sys\nfrom grader.cli import main\nrc = main(sys.argv[1:])\n"  # `python -m grader`, and then:
           "dask = {m.split('.')[0] for m in sys.modules} & {'dask', 'distributed'}\n"
           "assert '--scheduler' in sys.argv or not dask, 'a local grade imported Dask'\nsys.exit(rc)\n")


class Cluster:
    """A `dask scheduler` and `dask worker`s (--nthreads 1, no nanny: a worker is its process), killed at the end."""

    def __init__(self, folder: Path):
        self.folder, self.procs = folder, []
        file = folder / "scheduler.json"
        self._start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(file)])
        end = time.monotonic() + 60
        while not file.exists() and time.monotonic() < end:
            time.sleep(0.1)
        self.address = json.loads(file.read_text())["address"]
        self.client = distributed.Client(self.address, timeout=30)

    def _start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        env = {k: v for k, v in os.environ.items() if k != "TORCHDOJO_HIDDEN_SEED"}  # workers get it per batch
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=kw.pop("cwd", ROOT), env={**env, **kw.pop("env", {})}, start_new_session=True)
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str, **kw) -> subprocess.Popen:
        n = len(self.client.scheduler_info(n_workers=-1)["workers"])
        proc = self._start(name, [DASK, "worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny",
                                  "--no-dashboard"], **kw)
        self.client.wait_for_workers(n + 1, timeout=120)
        return proc

    def worker_named(self, name: str) -> str:
        return next(a for a, w in self.client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == name)

    def close(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        c.workers = {name: c.add_worker(name) for name in ("w0", "w1")}
        yield c
    finally:
        c.close()


def grade(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_DASK, "grade", "--lesson", "00_setup", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
                          **kw)


def files(out: Path) -> dict[str, str]:
    """Every file of a batch's results; the time a submission took is the one field that may differ."""
    got = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            got[str(path.relative_to(out))] = re.sub(r'"seconds": [0-9.]+', '"seconds": _', path.read_text())
    return got


def test_a_dask_batch_writes_the_same_files_as_a_local_one(cluster, tmp_path):
    subs = tmp_path / "subs"
    write(subs / "ann.ipynb", notebook("00_setup"))
    write(subs / "ben.ipynb", notebook("00_setup", correct=False))
    write(subs / "cy.ipynb", notebook("00_setup", {"pick_device": WRONG}))
    write(subs / "dee.ipynb", b"{broken")
    write(subs / "eve.ipynb", notebook("00_setup", {"pick_device": "raise RuntimeError('oops')"}))
    seed = {"TORCHDOJO_HIDDEN_SEED": "4321"}  # the workers' environment has none: it comes with the batch
    local = grade(subs, "--out", tmp_path / "local", "--gradescope", env=seed)  # also: no Dask imported
    assert local.returncode == 1 and "dee" in local.stdout, local.stderr
    dask = grade(subs, "--out", tmp_path / "dask", "--gradescope", "--scheduler", cluster.address, env=seed)
    assert dask.returncode == 1, dask.stderr
    assert dask.stdout == local.stdout
    assert "grading on 2 Dask worker(s)" in dask.stderr and dask.stderr.count("isolation:") == 2, dask.stderr
    assert (tmp_path / "dask" / "grades.csv").read_bytes() == (tmp_path / "local" / "grades.csv").read_bytes()
    assert files(tmp_path / "dask") == files(tmp_path / "local")
    ann = json.loads((tmp_path / "dask" / "ann.json").read_text())
    assert ann["score"] == 1 and any(c["hidden"] for c in ann["exercises"][0]["cases"])  # the seed got there
    # resumed like a local batch: what is missing is graded, nothing else is redone
    (tmp_path / "dask" / "cy.json").unlink()
    mtime = (tmp_path / "dask" / "ann.json").stat().st_mtime_ns
    again = grade(subs, "--out", tmp_path / "dask", "--scheduler", cluster.address, env=seed)
    assert again.returncode == 1 and "grading 1 submission(s) of 00_setup (4 already graded)" in again.stderr
    assert (tmp_path / "dask" / "ann.json").stat().st_mtime_ns == mtime
    assert files(tmp_path / "dask") == files(tmp_path / "local")


def slow(seconds: float) -> dict:
    """pick_device solved, after its cell spends `seconds` of CPU time."""
    return {"pick_device": f"import time\n_end = time.process_time() + {seconds}\nwhile time.process_time() < _end:\n"
                           f"    pass\n\n{solution_answers('00_setup')['pick_device']}"}


def test_a_worker_killed_mid_batch_costs_nothing(cluster, tmp_path):
    subs = tmp_path / "subs"
    students = [f"s{i}" for i in range(4)]
    for s in students:
        write(subs / f"{s}.ipynb", notebook("00_setup", slow(2)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "--lesson", "00_setup", str(subs), "--out",
                             str(out), "--scheduler", cluster.address], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim, end = None, time.monotonic() + 120
    while victim is None and time.monotonic() < end:  # a worker busy grading a submission
        busy = {a: keys for a, keys in cluster.client.processing().items()
                if any(str(k).startswith("grade_task") for k in keys)}
        victim = next(iter(busy), None)
        time.sleep(0.1)
    assert victim is not None and proc.poll() is None
    name = next(n for n in cluster.workers if cluster.worker_named(n) == victim)
    os.killpg(cluster.workers[name].pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert [line.split()[:2] for line in stdout.splitlines()] == [[s, "1/1"] for s in students]
    assert sorted(p.stem for p in out.glob("*.json")) == students and not list(out.rglob("*.tmp"))
    for s in students:  # written once each
        assert stderr.count(f"{s}: graded") == 1, stderr
    cluster.workers[name] = cluster.add_worker(name + "b")  # the next test gets two workers again


def test_a_worker_with_another_grader_version_is_refused(cluster, tmp_path):
    course = tmp_path / "course"
    for part in ("grader", "lessons", "pyproject.toml"):
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(ROOT / part, course / part)
    with open(course / "grader" / "grading" / "cluster.py", "a") as f:
        f.write("# another commit\n")
    stranger = cluster.add_worker("stranger", cwd=course, env={"PYTHONPATH": str(course)})
    address = cluster.worker_named("stranger")
    try:
        write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup"))
        done = grade(tmp_path / "subs", "--out", tmp_path / "out", "--scheduler", cluster.address)
    finally:
        os.killpg(stranger.pid, signal.SIGTERM)
        stranger.wait(timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    mine = grader_version(Lesson.load("00_setup"))
    found = re.search(r"worker (\S+) runs grader version (\w+) for 00_setup, this client (\w+)", last)
    assert found and found[1] == address and found[2] != mine and found[3] == mine, last
    assert "same course commit" in last and not list((tmp_path / "out").glob("*.json"))


def test_a_wrong_scheduler_address_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write(tmp_path / "subs" / "ann.ipynb", notebook("00_setup"))
    t0 = time.monotonic()
    done = grade(tmp_path / "subs", "--out", tmp_path / "out", "--scheduler", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 2 and time.monotonic() - t0 < 40
    assert "Traceback" not in done.stderr, done.stderr
    assert f"--scheduler tcp://127.0.0.1:{port}: no Dask scheduler answered" in done.stderr.strip().splitlines()[-1]
