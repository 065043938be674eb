"""A LoRA run end to end on the smoke model: only the adapter trains, syncs and is checkpointed; two RL steps at
learner world size 2 with Ray rollout workers, resumed inline at world size 1, are bitwise the uninterrupted
inline world-size-1 run; a step replays identically; `steprl export` writes what peft and transformers load back;
distillation takes a LoRA teacher and trains a LoRA student."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch

from steprl.agents.lora import base_identity
from steprl.agents.policy import build_policy, load_policy
from steprl.config import load_config
from steprl.pipeline import resume, train
from steprl.run.files.checkpoint import verify
from steprl.run.files.run_dir import open_run_dir
from steprl.run.learning.channels import state_bytes

pytestmark = pytest.mark.slow
LORA = ["model.lora.r=4", "model.lora.alpha=8", "learner.lr=1e-2", "warmup.lr=1e-2", "rl.checkpoint_every=1",
        "learner.entropy_coef=0.05",  # smoke rewards are all 0 after 20 warm-up steps: entropy moves the weights
        "stages=[warmup,rl]", "warmup.cache=true"]
RANKS = ["learner.world_size=2", "learner.threads_per_rank=1", "learner.cpus_per_rank=0.5",
         "rollout.executor=ray", "rollout.workers=2", "rollout.num_cpus_per_worker=0.5"]


def _cfg(root: Path, name: str, *extra: str):
    return load_config("smoke", [f"run.root={root}", f"run.name={name}", *LORA, *extra])


def _digest(run_dir: Path, step: int) -> dict[str, str]:
    """sha256 of the adapter, the learner state and every rollout record."""
    ck = run_dir / "checkpoints" / f"step_{step:06d}"
    out = {rel: hashlib.sha256((ck / rel).read_bytes()).hexdigest()
           for rel in ("model/adapter_model.safetensors", "model/base.json", "learner.safetensors", "learner.json")}
    for p in sorted((run_dir / "rollouts").glob("*.jsonl.gz")):
        out[p.name] = hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted inline run, and the run whose first two steps ran on two ranks and Ray workers."""
    root = tmp_path_factory.mktemp("lora")
    train(_cfg(root, "full", "rl.steps=4"))
    train(_cfg(root, "part", "rl.steps=2", *RANKS))
    run_dir, cfg = open_run_dir(root / "part")
    cfg.rl.steps = 4
    cfg.learner.world_size, cfg.rollout.executor = 1, "inline"
    resume(run_dir, cfg)
    return root


def test_only_the_adapter_trains_and_the_checkpoint_holds_it_alone(runs):
    ck = runs / "full" / "checkpoints"
    files = sorted(p.name for p in (ck / "step_000004" / "model").iterdir())
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    adapters = [hashlib.sha256((ck / f"step_{s:06d}/model/adapter_model.safetensors").read_bytes()).hexdigest()
                for s in (0, 2, 4)]
    assert len(set(adapters)) == 3, "the adapter never moved: the comparisons below would prove nothing"
    # the base is frozen: the policy rebuilt at step 4 has the base the run was built with
    _, cfg = open_run_dir(runs / "full")
    start = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    trained = load_policy(ck / "step_000004" / "model")
    assert base_identity(trained.model) == base_identity(start.model) == trained.base.sha256
    # optimizer moments and rollback snapshots for the adapter alone
    state = verify(ck / "step_000004").learner_state()
    adapter = {n for n, p in trained.model.named_parameters() if p.requires_grad}
    moments = sum(s["exp_avg"].numel() for s in state["optimizer"]["state"].values())
    assert moments == sum(p.numel() for n, p in trained.model.named_parameters() if n in adapter)
    assert moments < sum(p.numel() for p in trained.model.parameters()) // 2
    assert set(state["model"]) == set(state["rollback"]["newer"]["model"]) == adapter


def test_two_ranks_and_ray_workers_resumed_inline_equal_the_uninterrupted_run(runs):
    assert _digest(runs / "part", 4) == _digest(runs / "full", 4)


def test_each_version_sends_the_adapter_alone(runs):
    rows = [json.loads(line) for line in (runs / "part" / "metrics.jsonl").read_text().splitlines()]
    # step 0 publishes version 1 through Ray (step 1, the part's last, has no next version to send)
    (sent,) = [r["channel/weights_bytes"] for r in rows if r.get("stage") == "rl" and r.get("step") == 0]
    policy = load_policy(runs / "part" / "checkpoints" / "step_000002" / "model")
    adapter = state_bytes({n: p for n, p in policy.model.named_parameters() if p.requires_grad})
    assert sent == float(adapter)
    assert adapter < state_bytes(policy.model.state_dict()) / 4


def test_a_step_replays_identically_with_verified_weights(runs, capsys):
    from steprl.cli import main

    capsys.readouterr()
    assert main(["replay", str(runs / "full"), "--step", "3"]) == 0
    out = capsys.readouterr().out
    assert "trajectories identical" in out and "differ" not in out and "sha256 identical" in out


def test_export_writes_an_adapter_peft_loads_and_a_merged_model_transformers_loads(runs, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from steprl.cli import main

    assert main(["export", str(runs / "full")]) == 0
    assert main(["export", str(runs / "full"), "--merge"]) == 0
    assert main(["export", str(runs / "full")]) == 2  # never over an earlier export
    policy = load_policy(runs / "full" / "checkpoints" / "step_000004" / "model")
    adapter_dir, merged_dir = runs / "full" / "export", runs / "full" / "export-merged"
    base_dir = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    ids = torch.randint(3, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = policy.model(input_ids=ids).logits
        via_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter_dir))
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
        assert torch.equal(via_peft(input_ids=ids).logits, ours)  # the same modules on the same weights
        # merged weights (W + s*B@A) round differently from the adapter's path: a few float32 ulps
        tol = 64 * torch.finfo(torch.float32).eps * float(ours.abs().max())
        assert float((merged(input_ids=ids).logits - ours).abs().max()) <= tol


def test_distillation_with_a_lora_teacher_cut_into_a_lora_student(runs, tmp_path):
    cfg = _cfg(tmp_path, "distill", "rl.steps=1", "stages=[warmup,rl,distill,eval]", "distill.student_from_teacher=1",
               "distill.student.lora.r=2", "distill.student.lora.alpha=4", "distill.lr=1e-2")
    summary = train(cfg)
    final = Path(summary["stages"]["distill"]["final_checkpoint"])
    student = final / "model"
    assert (student / "adapter_model.safetensors").is_file()
    assert (student / "base" / "model.safetensors").is_file()  # cut from the teacher: no source rebuilds it
    first = student.parent.parent / "step_000001" / "model" / "adapter_model.safetensors"
    assert first.read_bytes() != (student / "adapter_model.safetensors").read_bytes(), "the student never moved"
    assert "student (distilled)" in summary["stages"]["eval"]["table"]
    reloaded = load_policy(student)
    assert sum(p.requires_grad for p in reloaded.model.parameters()) > 0
