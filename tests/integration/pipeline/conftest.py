"""Shared helpers for pipeline tests: a tiny smoke config in a temporary run root."""

import sys
from pathlib import Path

import pytest
import torch

from steprl.config import load_config


@pytest.fixture
def smoke(tmp_path):
    """A function building the smoke config under tmp_path with extra overrides."""

    def make(*overrides, name="t"):
        return load_config("smoke", [f"run.root={tmp_path}", f"run.name={name}", *overrides])

    prev = torch.get_num_threads()
    yield make
    torch.set_num_threads(prev)


sys.path.insert(0, str(Path(__file__).parent))  # lets tests import digests.py
