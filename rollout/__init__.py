"""steprl.rollout."""
