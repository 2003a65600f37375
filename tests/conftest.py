"""Shared test helpers: run a check on an implementation and assert the verdict."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    """Checks record progress; keep each test's progress file and workspace private and the hidden seed unset."""
    monkeypatch.setenv("TORCHDOJO_HOME", str(tmp_path / "torchdojo-home"))
    monkeypatch.setenv("TORCHDOJO_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.delenv("TORCHDOJO_HIDDEN_SEED", raising=False)
