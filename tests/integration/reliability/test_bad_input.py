"""Bad input to the CLI: exit 2, one line naming the file/key/argument, no traceback, nothing written.

Configs, checkpoints (tampered, torn, planted pickles: never unpickled), rollout records, CLI arguments.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
from relhelp import cli

from steprl.cli import main

ENV = "steprl/Calculator-v0"


def run_cli(capsys, *args) -> tuple[int, str]:
    """steprl ARGS in-process; returns (exit status, stderr)."""
    capsys.readouterr()
    rc = main([*args])
    return rc, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (nothing written or overwritten)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- configs

BAD_OVERRIDES = {
    "unknown key": ("rl.stepz=3", "unknown key 'rl.stepz'"),
    "unknown section": ("rolout.workers=2", "'rolout'"),
    "wrong type": ("rl.steps=abc", "wrong type for 'rl.steps'"),
    "float for int": ("run.seed=1.5", "'run.seed'"),
    "zero size": ("rollout.groups=0", "'rollout.groups': expected a positive integer"),
    "negative size": ("rollout.workers=-1", "'rollout.workers': expected a positive integer"),
    "zero steps": ("rl.steps=0", "'rl.steps'"),
    "negative lr": ("learner.lr=-1", "'learner.lr'"),
    "run.name with ..": ("run.name=../escape", "'run.name'"),
    "run.name with /": ("run.name=a/b", "'run.name'"),
    "run.name ..": ("run.name=..", "'run.name'"),
    "absolute run.name": ("run.name=/tmp/x", "'run.name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_bad_config_override_is_rejected_naming_the_key(capsys, tmp_path, case):
    import ray

    override, needle = BAD_OVERRIDES[case]
    root = tmp_path / "root"
    root.mkdir()
    rc, err = run_cli(capsys, "train", "smoke", f"run.root={root}", override)
    assert rc == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(root.iterdir()) and not any(tmp_path.parent.glob("escape"))  # nothing written anywhere
    assert not ray.is_initialized()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n")
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x80\x04\x95\x00\xff\xfe" * 100)
    broken = tmp_path / "broken.yaml"
    broken.write_text("run: [1, 2\n")
    python = tmp_path / "evil.yaml"
    python.write_text("run: !!python/object/apply:os.system ['touch CANARY']\n")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    return {"yaml bomb": (bomb, "aliases are not allowed"), "binary file": (binary, "weights.yaml"),
            "not yaml": (broken, "not valid YAML"), "python tag": (python, "evil.yaml"),
            "not a mapping": (listy, "expected a mapping"),
            "missing preset": (tmp_path / "no-such-preset", "no such file and no preset")}


@pytest.mark.parametrize(
    "case", ["yaml bomb", "binary file", "not yaml", "python tag", "not a mapping", "missing preset"]
)
def test_bad_config_file_is_rejected_naming_the_file(capsys, tmp_path, case, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, needle = _bad_files(tmp_path)[case]
    before = snapshot(tmp_path)
    rc, err = run_cli(
        capsys, "train", str(path) if case != "missing preset" else "no-such-preset", f"run.root={tmp_path}/r"
    )
    assert rc == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before and not (tmp_path / "CANARY").exists() and not (tmp_path / "r").exists()


def test_bad_config_subprocess_has_no_traceback(tmp_path):
    r = cli("train", "smoke", f"run.root={tmp_path}", "rollout.micro_batch=7", cwd=tmp_path)
    assert r.returncode == 2 and "'rollout.micro_batch'" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- checkpoints


class Canary:
    """Unpickling this creates the canary file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real verified checkpoint of a smoke-sized random policy (checkpoints/step_000000)."""
    from steprl.agents.policy import build_policy, save_policy
    from steprl.config import load_config
    from steprl.run.files.checkpoint import save_checkpoint, verify

    cfg = load_config("smoke")
    policy = build_policy(cfg.model, cfg.tokenizer, 0)
    root = tmp_path_factory.mktemp("ck")
    path = save_checkpoint(root / "checkpoints", 0, lambda d: save_policy(policy, d), {}, {"stage": "warmup"})
    verify(path)
    return path


def _rewrite_manifest(ck: Path, **extra: str) -> None:
    m = json.loads((ck / "MANIFEST.json").read_text())
    for rel in list(m["files"]):
        if (ck / rel).is_file():
            m["files"][rel] = hashlib.sha256((ck / rel).read_bytes()).hexdigest()
    m["files"].update(extra)
    (ck / "MANIFEST.json").write_text(json.dumps(m))


def _damage(ck: Path, case: str, canary: Path) -> str:
    """Damage a copy of the checkpoint; returns what the error must say."""
    evil = pickle.dumps(Canary(canary))
    st = ck / "model" / "model.safetensors"
    if case == "missing file":
        (ck / "model" / "config.json").unlink()
        return "'model/config.json' listed in the manifest is missing"
    if case == "flipped byte":
        b = bytearray(st.read_bytes())
        b[len(b) // 2] ^= 0x01
        st.write_bytes(bytes(b))
        return "'model/model.safetensors' does not match its sha256"
    if case == "manifest lists a file outside":
        outside = ck.parent / "outside.json"
        outside.write_text("{}")
        _rewrite_manifest(ck, **{"../outside.json": hashlib.sha256(b"{}").hexdigest()})
        return "'../outside.json', which is outside the checkpoint directory"
    if case == "unlisted pickle":
        (ck / "model" / "pytorch_model.bin").write_bytes(evil)
        return "'model/pytorch_model.bin' is not in the manifest"
    if case == "listed pickle":
        (ck / "model" / "pytorch_model.bin").write_bytes(evil)
        _rewrite_manifest(ck, **{"model/pytorch_model.bin": hashlib.sha256(evil).hexdigest()})
        return "refuses to load 'model/pytorch_model.bin'"
    if case == "pickle named safetensors":
        st.write_bytes(evil)
        _rewrite_manifest(ck)
        return "not a safetensors file"
    if case == "plain dir with only a pickle":
        (ck / "MANIFEST.json").unlink()
        ck = ck / "model"
        st.unlink()
        (ck / "pytorch_model.bin").write_bytes(evil)
        return "not a checkpoint"
    if case == "plain dir, pickle named safetensors":
        (ck / "MANIFEST.json").unlink()
        st.write_bytes(evil)
        return "not a safetensors file"
    raise AssertionError(case)


CK_CASES = ["missing file", "flipped byte", "manifest lists a file outside", "unlisted pickle", "listed pickle",
            "pickle named safetensors", "plain dir with only a pickle", "plain dir, pickle named safetensors"]


@pytest.mark.parametrize("case", CK_CASES)
def test_damaged_checkpoint_is_refused_and_pickles_never_unpickled(capsys, tmp_path, checkpoint, case):
    ck = tmp_path / "checkpoints" / "step_000000"
    shutil.copytree(checkpoint, ck)
    canary = tmp_path / "CANARY"
    needle = _damage(ck, case, canary)
    target = ck / "model" if case.startswith("plain dir") else ck
    before = snapshot(tmp_path)
    for policy in (target, tmp_path):  # the checkpoint itself, and the directory holding checkpoints/
        rc, err = run_cli(capsys, "eval", str(policy), "--env", ENV, "--episodes", "1")
        assert rc == 2, err
        if policy == target:
            assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not canary.exists()
    assert snapshot(tmp_path) == before


def test_plain_checkpoint_still_evaluates(capsys, checkpoint, tmp_path):
    """The refusals above are not blanket: the undamaged checkpoint is accepted."""
    rc, err = run_cli(capsys, "eval", str(checkpoint), "--env", ENV, "--episodes", "2", "--micro-batch", "2",
                      "--json", str(tmp_path / "r.json"))
    assert rc == 0, err


# ----------------------------------------------------------------------------- CLI arguments


def test_cli_bad_paths_and_ids(capsys, tmp_path, checkpoint):
    (tmp_path / "notackpt").mkdir()
    (tmp_path / "notackpt" / "README").write_text("hi")
    cases = [
        (["resume", str(tmp_path / "nope")], "not a steprl run directory"),
        (["replay", str(tmp_path / "nope"), "--step", "0"], "not a steprl run directory"),
        (["eval", str(tmp_path / "missing"), "--env", ENV], "no such checkpoint"),
        (["eval", str(tmp_path / "notackpt"), "--env", ENV], "not a checkpoint"),
        (["eval", str(checkpoint), "--env", "steprl/NoSuchEnv-v0"], "unknown env 'steprl/NoSuchEnv-v0'"),
        (["eval", str(checkpoint), "--env", ENV, "--episodes", "0"], "--episodes must be a positive integer"),
        (["envs", "steprl/NoSuchEnv-v0", "--demo", "1"], "NoSuchEnv"),
    ]
    before = snapshot(tmp_path)
    for args, needle in cases:
        rc, err = run_cli(capsys, *args)
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    assert snapshot(tmp_path) == before
    with pytest.raises(SystemExit) as e:  # argparse: a non-integer step
        main(["replay", str(tmp_path), "--step", "two"])
    assert e.value.code == 2
