"""One run seed fixes every source of randomness: python, numpy, torch and the environments."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 32-bit seed for one consumer (``"train_env"``, ``"sampler/denoiser"``, ...).

    Hashing the purpose keeps seeds of different consumers unrelated, and adding a consumer later
    does not shift the seeds of the others (as counting them in order would).
    """
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CPU and CUDA) from the run seed."""
    import torch

    random.seed(derive_seed(seed, "python"))
    np.random.seed(derive_seed(seed, "numpy"))
    torch.manual_seed(derive_seed(seed, "torch"))


def make_rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent numpy generator for one consumer; its state can be checkpointed."""
    return np.random.default_rng(derive_seed(seed, purpose))
