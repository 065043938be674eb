"""run.device, learner.dtype, rollout.dtype: bad values are config errors naming the key (issue 16)."""

import pytest

from steprl.agents.device import resolve_device
from steprl.config import load_config
from steprl.errors import ConfigError


@pytest.mark.parametrize("item, key", [("run.device=gpu", "run.device"), ("learner.dtype=float16", "learner.dtype"),
                                       ("rollout.dtype=bf16", "rollout.dtype")])
def test_bad_values_name_the_key(item, key):
    with pytest.raises(ConfigError, match=key):
        load_config("smoke", [item])


def test_defaults_are_float32_and_auto():
    cfg = load_config("smoke")
    assert (cfg.run.device, cfg.learner.dtype, cfg.rollout.dtype) == ("auto", "float32", "float32")


def test_auto_resolves_at_start_and_a_saved_auto_stays_cpu():
    import torch

    assert resolve_device("auto", fresh=True) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto", fresh=False) == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_refused_before_the_run_directory_exists(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from steprl.cli import main

    rc = main(["train", "smoke", "run.device=cuda", f"run.root={tmp_path}"])
    assert rc != 0
    assert not (tmp_path / "smoke").exists()
