"""`steprl replay` checks weights, not only tokens (issue 17).

The rebuild starts one checkpoint early and compares the rebuilt model and learner state with the
checkpoint it passes. Three outcomes stay distinct: weights verified (exit 0, naming the checkpoint),
weights diverged (exit 3: a checkpoint whose weights differ in the last bits, as another machine's
arithmetic would give, re-hashed so that it still verifies) and a tampered record (exit 2).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from steprl.run.files.checkpoint import MANIFEST, sha256_file, verify

TRAIN = ["rl.steps=4", "rl.checkpoint_every=2", "learner.entropy_coef=0.05"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A 4-step smoke run with checkpoints at steps 0, 2 and 4 whose weights move (entropy bonus)."""
    from steprl.config import load_config
    from steprl.pipeline import train

    root = tmp_path_factory.mktemp("rw")
    torch.set_num_threads(1)
    train(load_config("smoke", [f"run.root={root}", "run.name=base", "run.threads=1", *TRAIN]))
    return root / "base"


@pytest.fixture
def run(tmp_path, baseline):
    """A private copy of the baseline run."""
    dst = tmp_path / "run"
    shutil.copytree(baseline, dst)
    return dst


def replay(capsys, run_dir: Path, step: int) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `steprl replay RUN --step STEP`."""
    from steprl.cli import main

    capsys.readouterr()
    rc = main(["replay", str(run_dir), "--step", str(step)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("step", [2, 3])
def test_replay_verifies_the_weights_against_the_checkpoint_it_passes(capsys, baseline, step):
    ck = baseline / "checkpoints"
    assert sha256_file(ck / "step_000002/model/model.safetensors") != sha256_file(
        ck / "step_000000/model/model.safetensors")  # non-vacuous: the weights did move
    rc, out, _ = replay(capsys, baseline, step)
    assert rc == 0, out
    assert "weights verified at step 2 against checkpoint step_000002 (rebuilt from step_000000" in out
    assert f"8/8 trajectories identical (step {step}, policy version {step})" in out
    print(f"\nFIGURE replay-weights-verified: {out.strip().splitlines()[0]}")


def perturb_checkpoint(ckpt: Path) -> None:
    """Move one weight of the checkpoint's model by one ulp and re-hash its MANIFEST (it still verifies)."""
    path = ckpt / "model" / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    flat = tensors[name].flatten().clone()
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
    tensors[name] = flat.reshape(tensors[name].shape)
    save_file(tensors, str(path), metadata={"format": "pt"})
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"]["model/model.safetensors"] = sha256_file(path)
    (ckpt / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1))
    verify(ckpt)


def test_a_checkpoint_with_other_arithmetic_is_reported_as_weights_diverged(capsys, run):
    ckpt = run / "checkpoints" / "step_000002"
    perturb_checkpoint(ckpt)
    rc, out, _ = replay(capsys, run, 3)
    assert rc == 3, out
    recorded = sha256_file(ckpt / "model" / "model.safetensors")[:16]
    assert "weights diverged at step 2 (checkpoint step_000002: rebuilt sha256 " in out
    assert f"recorded {recorded} in model/model.safetensors" in out
    assert "trajectories identical" in out  # the token comparison is still reported, apart
    print(f"\nFIGURE replay-weights-diverged: exit {rc}: {out.strip().splitlines()[0]}")


@pytest.mark.parametrize("step_tampered", [1, 3], ids=["record-of-a-reapplied-update", "record-replayed"])
def test_a_tampered_record_is_the_tampered_record_error(capsys, run, step_tampered):
    rec = run / "rollouts" / f"step_{step_tampered:06d}.jsonl.gz"
    lines = gzip.decompress(rec.read_bytes()).split(b"\n")
    t = json.loads(lines[1])
    t["tokens"][-1] = (t["tokens"][-1] + 1) % 50  # digest kept: the record was altered
    lines[1] = json.dumps(t, sort_keys=True, separators=(",", ":")).encode()
    rec.write_bytes(gzip.compress(b"\n".join(lines), mtime=0))
    rc, out, err = replay(capsys, run, 3)
    assert rc == 2 and f"{rec}:2: digest mismatch for episode" in err, (out, err)
    assert "weights diverged" not in out and "trajectories identical" not in out
