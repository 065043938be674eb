"""Model building: deterministic init, save/load with plain transformers, parameter count."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from steprl.agents.config import ModelConfig
from steprl.agents.model import build_model, count_parameters, load_model

TINY = ModelConfig(layers=2, hidden=64, heads=2, kv_heads=1, intermediate=128, max_positions=256)


def weights_digest(model) -> str:
    """sha256 over the state dict in key order."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_same_seed_same_weights_different_seed_differs(arch):
    cfg = ModelConfig(**{**TINY.__dict__, "arch": arch})
    a, b, c = build_model(cfg, 101, 3), build_model(cfg, 101, 3), build_model(cfg, 101, 4)
    assert weights_digest(a) == weights_digest(b) != weights_digest(c)
    assert next(a.parameters()).dtype == torch.float32
    assert a.config.model_type == arch and a.config.vocab_size == 101


def test_bitwise_in_fresh_process():
    code = (
        "import hashlib, torch\n"
        "from steprl.agents.config import ModelConfig\nfrom steprl.agents.model import build_model\n"
        "m = build_model(ModelConfig(layers=2, hidden=64, heads=2, kv_heads=1, intermediate=128, "
        "max_positions=256), 101, 3)\n"
        "h = hashlib.sha256()\n"
        "for k, v in sorted(m.state_dict().items()):\n    h.update(k.encode()); "
        "h.update(v.contiguous().numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "7", "PATH": ""},
    )
    assert out.stdout.strip().splitlines()[-1] == weights_digest(build_model(TINY, 101, 3))


def test_global_rng_untouched():
    before = torch.random.get_rng_state()
    build_model(TINY, 101, 0)
    assert torch.equal(before, torch.random.get_rng_state())


def test_save_load_plain_transformers(tmp_path):
    m = build_model(TINY, 101, 5)
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path), local_files_only=True)
    ours = load_model(tmp_path)
    x = torch.tensor([[1, 10, 20, 30, 40]])
    with torch.no_grad():
        ref = m(x).logits
        assert torch.equal(ref, plain(x).logits) and torch.equal(ref, ours(x).logits)
    assert build_model(ModelConfig(path=str(tmp_path)), 101, 0).config.hidden_size == 64


def test_count_parameters_counts_tied_once():
    m = build_model(TINY, 101, 0)
    # embeddings (tied) 101*64; per layer: q 64*64, k,v 64*32 each, o 64*64, mlp 3*64*128, 2 norms; final norm
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64
    assert count_parameters(m) == 101 * 64 + 2 * per_layer + 64


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="arch"):
        build_model(ModelConfig(arch="gpt9"), 101, 0)
    with pytest.raises(FileNotFoundError):
        load_model("/nonexistent/model")


def test_loaded_model_has_dropout_off(tmp_path, caplog):
    import logging

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from steprl.agents.model import load_model

    cfg = Qwen2Config(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=32, attention_dropout=0.3)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="steprl.agents.model"):
        model = load_model(tmp_path)
    assert model.config.attention_dropout == 0.0
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in model.modules())
    assert "dropout set to 0" in caplog.text
    # train mode (as the learner runs) gives the eval-mode numbers and leaves the global RNG alone
    ids = torch.tensor([[1, 2, 3, 4]])
    state = torch.random.get_rng_state()
    model.train()
    a = model(input_ids=ids).logits
    model.eval()
    assert torch.equal(a, model(input_ids=ids).logits)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_every_kth_layer_keeps_the_teachers_layers_and_everything_else(arch):
    """The distillation student of `distill.student_from_teacher`: layers 0, k, 2k ... of the teacher, copied;
    with k=1 the copy computes the teacher's logits bit for bit."""
    from steprl.agents.model import every_kth_layer

    teacher = build_model(ModelConfig(**{**TINY.__dict__, "arch": arch, "layers": 5}), 50, seed=3)
    student = every_kth_layer(teacher, 2)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 5
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for new, old in enumerate((0, 2, 4)):
        for key in (k for k in s_state if f".layers.{new}." in k):
            assert torch.equal(s_state[key], t_state[key.replace(f".layers.{new}.", f".layers.{old}.")]), key
    for key in (k for k in s_state if ".layers." not in k):
        assert torch.equal(s_state[key], t_state[key]), key
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.equal(every_kth_layer(teacher, 1)(ids).logits, teacher(ids).logits)
        assert not torch.equal(student(ids).logits, teacher(ids).logits)


def test_keep_layers_copies_the_named_layers_in_order_and_refuses_bad_lists():
    """`distill.student_layers`: a contiguous middle block removed (here layers 1-2 of 5), the rest copied."""
    from steprl.agents.model import keep_layers

    teacher = build_model(ModelConfig(**{**TINY.__dict__, "layers": 5}), 50, seed=3)
    student = keep_layers(teacher, [0, 3, 4])
    assert student.config.num_hidden_layers == 3
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for new, old in enumerate((0, 3, 4)):
        for key in (k for k in s_state if f".layers.{new}." in k):
            assert torch.equal(s_state[key], t_state[key.replace(f".layers.{new}.", f".layers.{old}.")]), key
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.equal(keep_layers(teacher, list(range(5)))(ids).logits, teacher(ids).logits)
    for bad in ([], [2, 1], [0, 0], [0, 5], [-1, 2]):
        with pytest.raises(ValueError, match="strictly increasing indices in \\[0, 5\\)"):
            keep_layers(teacher, bad)
