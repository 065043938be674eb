"""The distill stage end to end on the smoke preset (inline executor): KL to the teacher goes down, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steprl.agents.tokenizer import build_char_tokenizer
from steprl.cli import main
from steprl.config import load_config
from steprl.rollout.plan import HALF, plan_distill, plan_eval, plan_step
from steprl.run.reporting.metrics import read_metrics
from steprl.stages.distill import picks_on_policy
from steprl.stages.distill import run_standalone as distill_from_config

STUDENT = [
    "distill.student.layers=1",
    "distill.student.hidden=16",
    "distill.student.heads=2",
    "distill.student.kv_heads=2",
    "distill.student.intermediate=32",
    "distill.student.max_positions=256",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (the machine is shared) and deterministic kernels."""
    prev, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(prev)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A smoke teacher briefly warmed up on demonstrations (far from uniform, so KL to it is large at first)."""
    from steprl.pipeline import train

    root = tmp_path_factory.mktemp("teacher")
    cfg = load_config("smoke", [f"run.root={root}", "run.name=teacher", "run.threads=1", "warmup.steps=30",
                                "warmup.lr=1e-2", "warmup.warmup_steps=2", "stages=[warmup]"])
    train(cfg)
    return root / "teacher"


def _cfg(tmp_path: Path, teacher: Path, *extra: str):
    return load_config(
        "smoke",
        [
            f"run.root={tmp_path}",
            "run.name=student",
            "run.threads=1",
            f"distill.teacher={teacher}",
            "distill.lr=1e-2",
            "distill.steps=5",
            "distill.checkpoint_every=2",
            *STUDENT,
            *extra,
        ],
    )


@pytest.mark.parametrize("method", ["on_policy", "off_policy"])
def test_distillation_lowers_held_out_reverse_kl(tmp_path, teacher_run, method):
    r = distill_from_config(_cfg(tmp_path, teacher_run, f"distill.method={method}"))
    assert r["kl_before"] > 0.5                                  # a random student is far from the warmed-up teacher
    assert r["kl_after"] < 0.7 * r["kl_before"], (r["kl_before"], r["kl_after"])
    assert r["student_params"] < r["teacher_params"] and r["eval_episodes"] == 8
    for key in ("success", "success_ci", "teacher_success", "success_before", "retention", "final_checkpoint"):
        assert key in r
    d = tmp_path / "student" / "distill"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "plots/kl_entropy.png",
        "rollouts/step_000004.jsonl.gz",
        "checkpoints/latest",
        "checkpoints/step_000005/MANIFEST.json",
    ):
        assert (d / name).exists(), name
    rows = [x for x in read_metrics(d / "metrics.jsonl") if x["stage"] == "distill"]
    assert [x["step"] for x in rows] == [0, 1, 2, 3, 4]
    assert all(x["on_policy"] == float(method == "on_policy") for x in rows)
    assert rows[0]["guard/nonfinite"] == 0.0 and rows[-1]["tokens_trained"] > 0
    if method == "on_policy":  # teacher batches differ step to step; the student's own KL falls steadily
        assert rows[-1]["kl"] < 0.7 * rows[0]["kl"]
    assert json.loads((d / "summary.json").read_text())["stages"]["distill"]["kl_after"] == r["kl_after"]


def test_resume_continues_from_checkpoint_and_matches(tmp_path, teacher_run):
    """Stopping after 2 of 3 steps and running again gives the same final student as one uninterrupted run."""
    full = distill_from_config(_cfg(tmp_path / "a", teacher_run, "distill.method=mixed", "distill.steps=3"))
    distill_from_config(_cfg(tmp_path / "b", teacher_run, "distill.method=mixed", "distill.steps=2"))
    part = distill_from_config(_cfg(tmp_path / "b", teacher_run, "distill.method=mixed", "distill.steps=3"))
    rows_b = read_metrics(tmp_path / "b" / "student" / "distill" / "metrics.jsonl")
    assert [x["step"] for x in rows_b] == [0, 1, 2]
    rows_a = read_metrics(tmp_path / "a" / "student" / "distill" / "metrics.jsonl")
    assert [x["step_digest"] for x in rows_a] == [x["step_digest"] for x in rows_b]
    assert rows_a[-1]["loss"] == rows_b[-1]["loss"] and full["kl_after"] == part["kl_after"]
    assert full["kl_before"] == part["kl_before"]


def test_new_teacher_does_not_resume_stale_student(tmp_path, teacher_run):
    """A distill dir made with another teacher (e.g. RL extended) starts over instead of resuming."""
    from steprl.agents.policy import build_policy, save_policy

    distill_from_config(_cfg(tmp_path, teacher_run, "distill.steps=2"))
    other = build_policy(load_config("smoke").model, load_config("smoke").tokenizer, seed=123)
    save_policy(other, tmp_path / "other")
    distill_from_config(_cfg(tmp_path, tmp_path / "other", "distill.steps=2"))
    d = tmp_path / "student" / "distill"
    assert len(list(d.glob("checkpoints_stale_*"))) == 1
    assert [x["step"] for x in read_metrics(d / "metrics.jsonl")] == [0, 1]


def test_sampled_path_for_large_vocabularies(tmp_path, teacher_run):
    """full_vocab_max below the vocabulary: on-policy steps go through the RL learner with -(log q - log p_T)."""
    r = distill_from_config(_cfg(tmp_path, teacher_run, "distill.full_vocab_max=50", "distill.steps=10"))
    rows = read_metrics(tmp_path / "student" / "distill" / "metrics.jsonl")
    assert "ratio_mean" in rows[0] and "kl_reverse" not in rows[0]        # the RL learner's metrics
    assert r["kl_after"] < 0.8 * r["kl_before"], (r["kl_before"], r["kl_after"])


def test_refuses_mismatched_tokenizer_and_missing_teacher(tmp_path, teacher_run, capsys):
    tok = build_char_tokenizer()
    tok.add_tokens(["<tool>"])
    tok.save_pretrained(str(tmp_path / "tok"))
    base = ["distill", "smoke", f"run.root={tmp_path}", f"distill.teacher={teacher_run}", *STUDENT]
    assert main(base + [f"tokenizer.path={tmp_path / 'tok'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the CLI's one-line message (after any log lines)
    assert err.startswith("steprl distill: distill: tokenizer.path") and "vocabulary (101 vs 102 tokens" in err
    assert main(["distill", "smoke", f"run.root={tmp_path}", f"distill.teacher={tmp_path / 'nope'}"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["distill", "smoke", f"run.root={tmp_path}"]) == 2
    assert "distill.teacher is not set" in capsys.readouterr().err


def test_plan_is_pure_and_disjoint_from_eval_and_rl():
    cfg = load_config("smoke", ["distill.method=mixed", "distill.mix_fraction=0.3"])
    a, b = plan_distill(cfg, 4), plan_distill(cfg, 4)
    assert a == b and a != plan_distill(cfg, 5) and len(a) == cfg.rollout.episodes_per_step
    assert {s.env_seed for s in a}.isdisjoint({s.env_seed for s in plan_step(cfg, 4)})
    assert all(s.env_seed < HALF for s in a) and all(s.env_seed >= HALF for s in plan_eval(0, cfg.env.id, 50))
    picks = [picks_on_policy(cfg, k) for k in range(400)]
    assert picks == [picks_on_policy(cfg, k) for k in range(400)]
    assert 0.24 < sum(picks) / 400 < 0.36
    assert all(picks_on_policy(load_config("smoke", ["distill.method=on_policy"]), k) for k in range(5))
    assert not any(picks_on_policy(load_config("smoke", ["distill.method=off_policy"]), k) for k in range(5))


def test_student_warmup_brings_the_student_closer_to_the_teacher_before_distilling(tmp_path, teacher_run):
    """distill.student_warmup_steps: the student first learns the teacher's demonstrations (same warm-up data)."""
    cold = distill_from_config(_cfg(tmp_path / "cold", teacher_run, "distill.steps=1"))
    warm = distill_from_config(
        _cfg(
            tmp_path / "warm",
            teacher_run,
            "distill.steps=1",
            "distill.student_warmup_steps=30",
            "warmup.lr=1e-2",
            "warmup.warmup_steps=2",
        )
    )
    assert cold["student_warmup_steps"] == 0 and warm["student_warmup_steps"] == 30
    assert warm["kl_before"] < 0.5 * cold["kl_before"], (cold["kl_before"], warm["kl_before"])
    rows = [r for r in read_metrics(tmp_path / "warm" / "student" / "metrics.jsonl") if r["stage"] == "student_warmup"]
    assert rows and rows[0]["step"] == 0



def test_student_pools_start_after_the_student_warm_up(tmp_path, teacher_run, monkeypatch):
    """Rollout workers started during a warm-up steal CPU from its OpenMP threads (run/loop/pools.py LazyPool):
    a fresh distillation builds the student's and the teacher's pools only once the student has warmed up."""
    import steprl.run.loop.pools as pools
    import steprl.run.loop.state as state
    import steprl.stages.distill as distill

    events: list[str] = []
    real_pool, real_warm = pools.make_pool, distill.warm_up
    for module in (pools, state):  # LazyPool (the student's) and RunState.get_pool (the teacher's)
        monkeypatch.setattr(module, "make_pool", lambda *a, **k: (events.append("pool"), real_pool(*a, **k))[1])
    monkeypatch.setattr(distill, "warm_up", lambda *a, **k: (events.append("warm_up"), real_warm(*a, **k))[1])
    distill_from_config(_cfg(tmp_path, teacher_run, "distill.steps=1", "distill.student_warmup_steps=3"))
    assert events == ["warm_up", "pool", "pool"], events  # the student's pool, then the teacher's (standalone)

def test_the_kl_is_sampled_on_kl_episodes_and_success_on_all_eval_episodes(tmp_path, teacher_run, monkeypatch):
    """`distill.kl_episodes`: the student's sampled episodes for its reverse KL are the first k held-out seeds;
    its greedy success still counts every `eval.episodes` seed."""
    import steprl.stages.distill as distill

    plays: list[tuple[int, bool, list[int]]] = []
    real = distill.evaluate

    def spy(pool, model, name, held_out, greedy=None):
        plays.append((held_out.episodes, held_out.greedy if greedy is None else greedy,
                      [s.env_seed for s in held_out.specs()]))
        return real(pool, model, name, held_out, greedy)

    monkeypatch.setattr(distill, "evaluate", spy)
    result = distill_from_config(_cfg(tmp_path, teacher_run, "distill.steps=1", "eval.episodes=16",
                                      "eval.micro_batch=8", "distill.kl_episodes=4"))
    assert [(n, g) for n, g, _ in plays] == [(16, True), (4, False), (16, True), (4, False)]  # before, after
    assert plays[1][2] == plays[0][2][:4]  # the KL's episodes are the first 4 of the success episodes
    assert result["eval_episodes"] == 16 and result["kl_after"] > 0


def test_train_with_distill_and_eval_stages_prints_teacher_and_student_side_by_side(tmp_path, capsys):
    rc = main(
        [
            "train",
            "smoke",
            f"run.root={tmp_path}",
            "run.name=both",
            "run.threads=1",
            "stages=[warmup,rl,distill,eval]",
            "distill.student_warmup_steps=10",
            "eval.timing_repeats=2",
            *STUDENT,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    ev = summary["stages"]["eval"]
    assert [p["policy"] for p in ev["policies"]] == ["teacher (rl policy)", "student (distilled)"]
    teacher, student = ev["policies"]
    assert (
        student["params"] < teacher["params"]
        and ev["student_vs_teacher"]["param_ratio"] == student["params"] / teacher["params"]
    )
    assert ev["success"] == teacher["success"] == summary["stages"]["rl"]["success"]  # the same seeds, the same weights
    assert student["success"] == summary["stages"]["distill"]["success"]
    assert "teacher (rl policy)" in out and "student (distilled)" in out and ev["timing_repeats"] == 2
