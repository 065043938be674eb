"""run.kernels (issue #17): portable mode gives the same bits whatever kernel paths the machine
(or the user's shell) would pick; native mode does not; machine.json and its comparison."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steprl.cpu import cpu_flags, cpu_vendor
from steprl.run.machine import kernels
from steprl.run.machine.fingerprint import compare, cpu_model

# The portable run of RUN_ARGS, per machine class: sha256 of its final checkpoint's learner.safetensors (weights,
# AdamW state, guard state) and model/model.safetensors (the weights). Portable mode pins ATen AVX2, MKL CBWR=AVX2,
# oneDNN AVX2 and 2 threads, which makes it bitwise within a CPU vendor but not across: MKL picks its code branch by
# vendor (on AMD the CBWR=AVX2 branch is not taken), so Intel and AMD CPUs run other GEMM and vector-math code under
# the same pins (docs/kernel-fingerprints/, `steprl doctor`; issue #32). A class with a recorded value fails on a
# mismatch; a class without one skips and prints what to record.
GOLDEN = {
    "AuthenticAMD": {
        "learner.safetensors": "c3f01cdb3f5efec9754ee70527c5a946fb2323bf59fe383536906256066e3df0",
        "model/model.safetensors": "0baea7ad8ea6ba57beca5e811fbf34eab0200e434afa1ae32612554e5a811355",
        "measured": "AMD EPYC Zen 3 (family 25 model 1; AVX2+FMA, no AVX-512), 2026-12-07, after learner.safetensors "
                    "stopped holding a copy of model/'s weights (it was cce291e9... before, with the same "
                    "model.safetensors). At 87d174d learner.safetensors was a6717a83... both there and on "
                    "an AMD EPYC Zen 5 (AVX-512, AVX512_BF16, no AMX), with the same model.safetensors 0baea7ad...",
    },
    # Intel Xeon Sapphire Rapids (AVX-512, AMX) gave learner.safetensors 0e0c3219... at 87d174d (issue 26), in the
    # checkpoint layout before learner.rollback_steps; its value in today's layout is not measured yet.
}
CHECKED_FILES = ("learner.safetensors", "model/model.safetensors")
RUN_ARGS = ["train", "smoke", "warmup.steps=4", "rl.steps=1", "stages=[warmup,rl]"]
# kernel paths other machines would take (emulated from outside)
FOREIGN = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "TRUE"}

needs_avx2 = pytest.mark.skipif(
    not {"avx2", "fma"} <= cpu_flags(), reason="portable mode needs an x86-64 CPU with AVX2+FMA"
)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in kernels.PINNED_KEYS and not k.startswith("STEPRL_KERNELS")}
    return env | extra


def _start(root: Path, name: str, mode: str, extra_env: dict[str, str], torch_first: bool = False) -> subprocess.Popen:
    """The CLI training `name` in a fresh process (started, not awaited: the four runs overlap, their bits do not
    depend on it since each pins its own thread count, and most of each is single-threaded imports)."""
    argv = [*RUN_ARGS, f"run.kernels={mode}", f"run.root={root}", f"run.name={name}"]
    if torch_first:  # torch already loaded with the foreign settings: the CLI must re-exec itself
        code = (f"import sys, torch; torch.zeros(2).sum(); sys.argv = ['steprl', *{argv!r}]; "
                "from steprl.cli import main; sys.exit(main())")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "steprl.cli", *argv]
    return subprocess.Popen(cmd, cwd=root, env=_env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc: subprocess.Popen, run: Path) -> tuple[dict, dict]:
    """({file: sha256} of the final checkpoint's CHECKED_FILES, machine.json) of a run started by _start."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out[-3000:]}"
    final = run / "checkpoints" / "step_000001"
    digest = {f: hashlib.sha256((final / f).read_bytes()).hexdigest() for f in CHECKED_FILES}
    return digest, json.loads((run / "machine.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    started = {
        "portable": ("p", _start(root, "p", "portable", {})),
        "portable_foreign": ("pf", _start(root, "pf", "portable", FOREIGN, torch_first=True)),
        "native": ("n", _start(root, "n", "native", {})),
        "native_foreign": ("nf", _start(root, "nf", "native", {"ATEN_CPU_CAPABILITY": "default"})),
    }
    return {key: _finish(proc, root / name) for key, (name, proc) in started.items()}


@needs_avx2
def test_portable_ignores_machine_kernels(runs):
    assert runs["portable"][0] == runs["portable_foreign"][0]
    assert runs["portable_foreign"][1]["cpu_capability"] == "AVX2"


@needs_avx2
def test_native_follows_machine_kernels(runs):
    """The mode matters: the ATen kernel path alone changes native weights (measured on AMD EPYC and Intel Xeon)."""
    if runs["native"][1]["cpu_capability"] == "DEFAULT":
        pytest.skip("this machine's native kernel path is already DEFAULT: no difference to show")
    assert runs["native_foreign"][1]["cpu_capability"] == "DEFAULT"
    assert runs["native"][0] != runs["native_foreign"][0]


@needs_avx2
def test_golden(runs):
    """The portable run's bits are the recorded ones for this machine's class (CPU vendor)."""
    vendor, got = cpu_vendor(), runs["portable"][0]
    if vendor not in GOLDEN:
        pytest.skip(f"no portable golden recorded for CPU vendor {vendor!r} ({cpu_model()}); this machine gives "
                    f"{got}: record it in GOLDEN with the CPU model, flags and commit")
    want = GOLDEN[vendor]
    assert got == {f: want[f] for f in CHECKED_FILES}, f"portable bits differ from those measured on {want['measured']}"


@needs_avx2
def test_shell_values_do_not_leak_into_portable(runs):
    fp = runs["portable_foreign"][1]
    assert fp["env"] == {**kernels.ISA_ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert fp["torch_threads"] == 2


def test_native_leaves_shell_values_and_portable_overrides_them():
    code = (
        "import os, sys; from steprl.run.machine import kernels; kernels.ensure(sys.argv[1], 3, []);"
        "print(os.environ.get('ATEN_CPU_CAPABILITY'), os.environ.get('MKL_CBWR'), "
        "os.environ.get('OMP_NUM_THREADS'), 'torch' in sys.modules)"
    )
    env = _env({"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "7"})
    out = subprocess.run(
        [sys.executable, "-c", code, "native"], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["avx512", "COMPATIBLE", "7", "False"]
    if {"avx2", "fma"} <= cpu_flags():
        out = subprocess.run(
            [sys.executable, "-c", code, "portable"], env=env, check=True, capture_output=True, text=True
        ).stdout.split()
        assert out == ["avx2", "AVX2", "3", "False"]


def test_bad_mode_is_a_config_error():
    from steprl.config import load_config
    from steprl.errors import ConfigError

    with pytest.raises(ConfigError, match="kernels"):
        load_config("smoke", ["run.kernels=fast"])


def test_mode_from_argv_reads_config_without_torch(tmp_path):
    code = (
        "import sys; from steprl.run.machine.kernels import mode_from_argv;"
        "print(mode_from_argv(['train', 'smoke', 'run.kernels=portable', 'run.threads=3']), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "('portable', 3) False"
    (tmp_path / "config.yaml").write_text("run: {kernels: portable, threads: 1}\n")
    assert kernels.mode_from_argv(["replay", str(tmp_path), "--step", "0"]) == ("portable", 1)
    assert kernels.mode_from_argv(["resume", str(tmp_path), "run.threads=4"]) == ("portable", 4)
    assert kernels.mode_from_argv(["eval", "x"]) == ("native", 2)  # not a run's policy: the machine's kernels
    (tmp_path / "checkpoints" / "step_000003" / "model").mkdir(parents=True)
    assert kernels.mode_from_argv(["eval", str(tmp_path / "checkpoints" / "step_000003" / "model"), "--threads",
                                   "3"]) == ("portable", 3)
    assert kernels.mode_from_argv(["envs"]) is None


def _fp(**kw):
    base = {
        "cpu_model": "AMD EPYC",
        "machine": "x86_64",
        "cpu_flags": ["avx2", "avx512f", "fma"],
        "cpu_capability": "AVX512",
        "torch": "2.13.0+cpu",
        "mkl": "2024.2",
        "onednn": "v3.12.0",
        "threads": 2,
        "kernels": "native",
        "env": {k: None for k in kernels.PINNED_KEYS},
    }
    return base | kw


def test_compare_same_machine_is_silent():
    assert compare(_fp(), _fp()) == []
    p = _fp(
        kernels="portable",
        cpu_capability="AVX2",
        env={**kernels.ISA_ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    )
    assert compare(p, p) == []


def test_compare_native_other_cpu_says_what_to_do():
    out = compare(_fp(), _fp(cpu_model="Intel Xeon", cpu_flags=["amx_tile", "avx2", "avx512f", "fma"]))
    assert len(out) == 1 and "Intel Xeon" in out[0] and "AMD EPYC" in out[0] and "run.kernels=portable" in out[0]


def test_compare_portable_same_vendor_is_fine_other_vendor_versions_and_threads_are_named():
    env = {**kernels.ISA_ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    rec = _fp(kernels="portable", cpu_capability="AVX2", env=env)
    assert compare(rec, rec | {"cpu_model": "AMD EPYC 9B45", "cpu_flags": ["avx2", "fma"]}) == []  # one vendor
    other = compare(rec, rec | {"cpu_model": "Intel Xeon", "cpu_flags": ["avx2", "fma"]})
    assert len(other) == 1 and "vendor" in other[0] and "GenuineIntel" in other[0] and "AuthenticAMD" in other[0]
    assert "exit 3" in other[0]
    explicit = compare(rec | {"cpu_vendor": "AuthenticAMD"}, rec | {"cpu_vendor": "GenuineIntel"})
    assert len(explicit) == 1 and "vendor" in explicit[0]
    out = compare(rec, rec | {"torch": "2.14.0", "threads": 4})
    assert any("torch version" in line for line in out) and any("thread" in line for line in out)


def test_compare_native_env_and_mode_differences():
    out = compare(_fp(), _fp(env={**_fp()["env"], "MKL_CBWR": "AVX2"}))
    assert len(out) == 1 and "MKL_CBWR" in out[0]
    out = compare(_fp(), _fp(kernels="portable"))
    assert any("run.kernels" in line for line in out)


def test_auto_resolves_by_cpu(monkeypatch):
    """The default is portable where the CPU runs the AVX2 paths, native elsewhere; config.yaml records which."""
    from steprl import cpu
    from steprl.config import from_dict, load_config, to_dict

    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma", "sse4_2"})
    assert load_config("smoke").run.kernels == "portable"
    assert load_config("smoke", ["run.kernels=native"]).run.kernels == "native"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"sse4_2"})
    assert load_config("smoke").run.kernels == "native"
    data = to_dict(load_config("smoke"))
    del data["run"]["kernels"]  # a config.yaml written before run.kernels existed: that run was native
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma"})
    assert from_dict(data).run.kernels == "native"


@needs_avx2
def test_library_run_refuses_unpinned_torch(tmp_path):
    """In-process use after `import torch` cannot pin the kernels: a portable run says so and starts nothing;
    pin() before torch makes the same call run portable."""
    code = (
        "import sys; from pathlib import Path\n"
        "if sys.argv[1] == 'pin':\n    from steprl.run.machine import kernels; kernels.pin(2)\n"
        "import torch; torch.zeros(2).sum()\n"
        "from steprl.config import load_config; from steprl.errors import SteprlError\n"
        "from steprl.pipeline import train\n"
        "cfg = load_config('smoke', ['stages=[warmup]', 'warmup.steps=2', f'run.root={sys.argv[2]}', 'run.name=r'])\n"
        "try:\n    train(cfg); print('trained', torch.backends.cpu.get_cpu_capability())\n"
        "except SteprlError as e:\n    print('refused:', e)\n"
        "print(Path(sys.argv[2], 'r').exists())\n"
    )
    env = _env({})
    plain, pinned = (subprocess.Popen([sys.executable, "-c", code, how, str(tmp_path / d)], env=env, text=True,
                                      stdout=subprocess.PIPE) for how, d in (("plain", "a"), ("pin", "b")))
    out = plain.communicate(timeout=300)[0]
    assert plain.returncode == 0 and "refused:" in out and "kernels.pin()" in out and "run.kernels=native" in out
    assert out.strip().endswith("False")  # no run directory left behind
    out = pinned.communicate(timeout=300)[0]
    assert pinned.returncode == 0 and "trained AVX2" in out and out.strip().endswith("True")


def test_compare_portable_ignores_thread_variables_but_not_isa_ones():
    """A library-trained portable run records the process's OMP/MKL thread variables, which need not equal
    run.threads (torch.set_num_threads sets the threads); only the ISA pins and `threads` itself matter."""
    env = {**kernels.ISA_ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    rec = _fp(kernels="portable", cpu_capability="AVX2", env=env, threads=1)
    assert compare(rec, rec | {"env": {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}) == []
    out = compare(rec, rec | {"env": {**env, "MKL_CBWR": "COMPATIBLE"}})
    assert len(out) == 1 and "MKL_CBWR" in out[0]
