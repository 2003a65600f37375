"""Where the course's shipped datasets live."""
import os
from pathlib import Path


def datasets_dir() -> Path:
    """The datasets folder: $TORCHDOJO_DATA if set, else datasets/ next to the grader package."""
    env = os.environ.get("TORCHDOJO_DATA", "").strip()
    return Path(env).expanduser() if env else Path(__file__).resolve().parent.parent / "datasets"
