"""GPU check: the smoke preset on cuda, twice at world size 1 and once at world size 2, and the chat preset (a chat
renderer: banned ids, end-of-turn token, top-k/top-p) twice; do digests and weights match?

Written to run unedited the first time a machine with a GPU is available (issue 16):

    python bench/device_check.py [--root /tmp/device_check] [--keep] [--device cuda|cpu]

Runs `steprl train smoke run.device=cuda` three times (world size 1, again world size 1, world size 2 with
one GPU per rank, so world size 2 needs two GPUs and is reported as skipped with one), and `configs/chat.yaml`
twice on a small offline Qwen2 chat model directory (tests/agents/conftest.py builds it: ChatML template,
byte-level BPE), because only a chat renderer bans ids in the sampler and the learner (the compact renderer
bans none, so the smoke runs never build the banned-id mask on the device). Then it compares
the sha256 of every checkpoint file and rollout record (the digest of a run directory: what
/tmp/digest_run.py printed during development, rewritten here) and prints MATCH or DIFFER per pair with
the first differing files. Exit 0 when everything run matches, 1 when a pair differs. On a machine
without a GPU it prints that no GPU is present and exits 0; `--device cpu` runs the same pairs on the CPU
(world size 2 skipped), to check the script itself there.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SMOKE = ["stages=[warmup,rl]", "rl.steps=5", "rl.checkpoint_every=1"]
"""Five RL steps, a checkpoint after each (issue 16's 'weights equal after every step')."""


CHAT = ["stages=[rl]", "rl.steps=2", "rl.checkpoint_every=1", "rollout.groups=2", "rollout.group_size=2",
        "rollout.micro_batch=4", "rollout.sampling.max_new_tokens=24", "rollout.sampling.top_p=0.9",
        "rollout.sampling.top_k=50", "learner.micro_batch=4"]
"""Two RL steps of the chat preset with top-k and top-p on, a checkpoint after each."""

REPO = Path(__file__).resolve().parents[1]


def digest(run: Path) -> dict[str, str]:
    """sha256 (16 hex) of every checkpoint file and rollout record of a run directory (gz files decompressed)."""
    out = {}
    for p in sorted(run.rglob("*")):
        if not p.is_file() or not ({"checkpoints", "rollouts"} & set(p.relative_to(run).parts)):
            continue
        if p.name in ("MANIFEST.json", "state.json") or p.suffix == ".png":  # state.json holds wall times
            continue
        data = p.read_bytes()
        out[str(p.relative_to(run))] = hashlib.sha256(gzip.decompress(data) if p.name.endswith(".gz")
                                                      else data).hexdigest()[:16]
    return out


def train(root: Path, name: str, extra: list[str], device: str = "cuda", preset: str = "smoke") -> Path:
    """One `steprl train PRESET` on `device`; raises SystemExit with its stderr tail when it fails."""
    cmd = [sys.executable, "-m", "steprl.cli", "train", preset, f"run.device={device}", f"run.root={root}",
           f"run.name={name}", *(SMOKE if preset == "smoke" else CHAT), *extra]
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return root / name


def chat_model_dir(root: Path) -> Path:
    """The small offline Qwen2 chat model directory of the test suite (built once under `root`)."""
    path = root / "qwen2_chat"
    if not (path / "config.json").is_file():
        sys.path.insert(0, str(REPO / "tests" / "agents"))
        from conftest import build_qwen_dir  # the tests' builder: one definition of the model

        path.mkdir(parents=True, exist_ok=True)
        build_qwen_dir(path)
    return path


def chat_runs(root: Path, device: str) -> bool:
    """The chat preset twice on `device`; True when both runs' files match."""
    model = chat_model_dir(root)
    extra = [f"model.path={model}", f"tokenizer.path={model}"]
    a = digest(train(root, "chat_a", extra, device, str(REPO / "configs" / "chat.yaml")))
    b = digest(train(root, "chat_b", extra, device, str(REPO / "configs" / "chat.yaml")))
    return compare(f"{device} chat renderer (top-k, top-p, banned ids), run twice", a, b)


def compare(what: str, a: dict[str, str], b: dict[str, str]) -> bool:
    """Print MATCH / DIFFER for two digests (weights = checkpoint model/learner files; rollouts = records)."""
    keys = sorted(set(a) | set(b))
    bad = [k for k in keys if a.get(k) != b.get(k)]
    weights = [k for k in bad if "checkpoints" in k]
    rollouts = [k for k in bad if "rollouts" in k]
    ok = not bad
    print(f"{what}: {'MATCH' if ok else 'DIFFER'} ({len(keys)} files; weights differ: {len(weights)}, "
          f"rollouts differ: {len(rollouts)})" + (f"; first: {bad[:3]}" if bad else ""), flush=True)
    return ok


def main() -> int:
    """Run the check; 0 when all comparisons match (or no GPU), 1 otherwise."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where the runs train (default cuda)")
    args = ap.parse_args()
    import torch

    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("device_check: no GPU present (torch.cuda.is_available() is False); nothing to check")
        return 0
    n_gpu = torch.cuda.device_count() if dev == "cuda" else 0
    where = f"{n_gpu} x {torch.cuda.get_device_name(0)}" if dev == "cuda" else "cpu"
    print(f"device_check: {where}, torch {torch.__version__}", flush=True)
    root = args.root or Path(tempfile.mkdtemp(prefix="device_check_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        a = digest(train(root, "ws1_a", [], dev))
        b = digest(train(root, "ws1_b", [], dev))
        ok = compare(f"{dev} world size 1, run twice", a, b)
        if n_gpu >= 2:
            c = digest(train(root, "ws2", ["learner.world_size=2", "learner.cpus_per_rank=1"], dev))
            ok = compare(f"{dev} world size 1 vs world size 2", a, c) and ok
        else:
            print(f"{dev} world size 1 vs world size 2: SKIPPED (needs 2 GPUs: one per rank)")
        ok = chat_runs(root, dev) and ok
        return 0 if ok else 1
    finally:
        if not args.keep and args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
