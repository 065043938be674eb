"""Masked positions cannot poison the loss: a banned id in the prompt (a chat template's turn-start token)
has log-prob -inf at a masked position, and a loss that multiplies by the mask (GSPO's sequence mean) turned
-inf - -inf into NaN for the whole sequence. The objective hands the losses 0 there (a `where`), and
`collate` fills advantages with a `where`, never a multiply by the mask."""

from __future__ import annotations

import math

import pytest
import torch

from steprl.learners.batch import collate
from steprl.learners.config import LearnerConfig
from steprl.learners.trainer import rl_trainer
from steprl.rollout.trajectory import LogitFilter

BANNED = 1


@pytest.mark.parametrize("loss", ["ppo", "gspo", "cispo"])
def test_a_banned_id_in_the_prompt_leaves_the_loss_finite(loss, new_model, traj):
    model = new_model(2)
    # prompt [2, BANNED, 4]: the target BANNED is -inf under the filter, at a masked position
    trajs = [traj(i, [2, BANNED, 4, 5 + i, 6], [0, 0, 0, 1, 1], [0.0, 0.0, 0.0, -2.0, -2.0], reward=float(i % 2),
                  group=0, member=i) for i in range(4)]
    cfg = LearnerConfig(lr=1e-3, loss=loss, tis_cap=0.0)
    trainer = rl_trainer(model, cfg, logit_filter=LogitFilter(banned=(BANNED,)))
    stats = trainer.update(trajs)
    assert stats["skipped"] == 0.0 and math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
    assert stats["grad_norm"] > 0


def test_collate_advantages_are_selected_not_multiplied(traj):
    t = traj(0, [2, 3, 4], [0, 1, 0])
    batch = collate([t], 0, [float("inf")])
    assert batch.advantages_BT.tolist() == [[float("inf"), 0.0]]  # inf x 0 would be NaN on the masked target
    assert torch.equal(batch.action_mask_BT, torch.tensor([[1.0, 0.0]]))
