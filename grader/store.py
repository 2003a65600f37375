"""A learner's progress and hints, kept in a small JSON file (never needed for grading)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def progress_file() -> Path:
    """$TORCHDOJO_HOME/progress.json, by default ~/.torchdojo/progress.json."""
    home = os.environ.get("TORCHDOJO_HOME") or Path.home() / ".torchdojo"
    return Path(home) / "progress.json"


def load() -> dict[str, dict]:
    """{exercise name: {"status": ..., "hints_seen": n}}; empty when there is no readable file yet."""
    try:
        data = json.loads(progress_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def update(name: str, **fields) -> None:
    """Merge `fields` into the exercise's entry; written atomically, and silently skipped where the disk is
    read-only (progress is a convenience, a check must never fail because of it)."""
    path = progress_file()
    data = load()
    data.setdefault(name, {}).update(fields)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(f.name, path)
    except OSError:
        pass
