"""Random state for exactly repeatable training: seeding everything, and saving and restoring it.

The saved state holds only tensors and primitives, so a training checkpoint
carrying it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def fold(seed: int) -> int:
    """``seed`` folded into 63 bits: the seeds derived from a large ``--seed`` (e.g. 20240101, times the step
    and style multipliers) would overflow ``manual_seed``; small ones are kept as they are."""
    return seed % 2**63


def generator(seed: int) -> torch.Generator:
    """A torch generator seeded with ``fold(seed)``."""
    return torch.Generator().manual_seed(fold(seed))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and primitives (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": np_state["state"]["pos"],
                  "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"],
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
