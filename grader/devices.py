"""Which devices the checks run on, and moving case inputs between them."""
from __future__ import annotations

import os

import torch
from torch.utils._pytree import tree_map


def available_devices() -> list[str]:
    """'cpu', then 'cuda' and 'mps' where present. TORCHDOJO_DEVICES="cpu" narrows the list (e.g. for grading)."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    wanted = os.environ.get("TORCHDOJO_DEVICES")
    if wanted:
        found = [d for d in found if d in wanted.split(",")] or ["cpu"]
    return found


def _move(x, device):
    if not isinstance(x, torch.Tensor):
        return x
    return x.detach().clone().to(device).requires_grad_(x.requires_grad)


def to_device(tree, device: str):
    """A copy of every tensor in `tree` (tuples, lists, dicts) on `device`; other values unchanged."""
    return tree_map(lambda x: _move(x, device), tree)
