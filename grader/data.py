"""Where the course's shipped datasets live."""
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def datasets_dir() -> Path:
    """The datasets folder: $TORCHDOJO_DATA if set, else the copy inside an installed wheel, else the checkout's."""
    env = os.environ.get("TORCHDOJO_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    # A wheel carries the folder inside the package (see pyproject.toml). It is looked for first because beside an
    # installed package, site-packages/datasets/ is someone else's: Hugging Face's `datasets`, which Colab has.
    installed = PACKAGE / "datasets"
    return installed if installed.is_dir() else PACKAGE.parent / "datasets"
