"""12_performance: the lesson's DistributedDataParallel script, run for real with two gloo processes (torchrun and
mp.spawn), leaves identical parameters on both ranks."""
import ast
import os
import re
import subprocess
import sys

import pytest
import torch

from grader.build import ROOT

SOURCE = ROOT / "solutions" / "12_performance.py"
TIMEOUT_S = 240


def lesson_constant(name: str) -> str:
    """The string the lesson assigns to `name` at module level (what its notebook writes to a file)."""
    for node in ast.parse(SOURCE.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SOURCE.name} assigns no {name}")


@pytest.fixture
def script(tmp_path):
    """The lesson's DDP script, written where the notebook writes it (ddp_train.py in a temporary folder)."""
    assert '(WORKDIR / "ddp_train.py").write_text(DDP_SCRIPT)' in SOURCE.read_text(encoding="utf-8")
    path = tmp_path / "ddp_train.py"
    path.write_text(lesson_constant("DDP_SCRIPT"), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    return path, out


def run(command, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def states(out, world_size=2):
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


def assert_identical(out):
    """Both ranks saved the same keys and exactly the same values, all finite."""
    first, second = states(out)
    assert first.keys() == second.keys() and first
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs between rank 0 and rank 1"
        assert torch.isfinite(first[key]).all()


def test_torchrun_two_gloo_processes_end_with_identical_parameters(script):
    path, out = script
    stdout = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  str(path), str(out)], path.parent)
    assert_identical(out)
    # the all-reduce saw both ranks: 1 + 2 on each
    assert stdout.count("all_reduce of (rank + 1) over 2 ranks = 3") == 2, stdout
    # rank 1 started from other weights, DDP broadcast rank 0's, and training then changed them
    found = re.findall(r"rank (\d): checksum (\S+) before DDP, (\S+) after", stdout)
    before = {rank: (b, a) for rank, b, a in found}
    assert set(before) == {"0", "1"}, stdout
    assert before["1"][0] != before["1"][1] and before["0"][1] == before["1"][1], stdout
    trained = dict(re.findall(r"rank (\d): 256 of 512 samples per epoch, .* checksum after training (\S+)", stdout))
    assert set(trained) == {"0", "1"} and trained["0"] == trained["1"], stdout
    assert float(trained["0"]) != pytest.approx(float(before["0"][1]), abs=1e-3), "training changed nothing"


def test_mp_spawn_from_an_importable_module_ends_with_identical_parameters(script, tmp_path):
    path, out = script
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import torch.multiprocessing as mp\nimport ddp_train\n"
            "if __name__ == '__main__':\n"
            "    mp.spawn(ddp_train.train, args=(2, 'file://' + sys.argv[3], sys.argv[2]), nprocs=2, join=True)\n")
    run([sys.executable, "-c", code, str(path.parent), str(out), str(tmp_path / "rendezvous")], tmp_path)
    assert_identical(out)
