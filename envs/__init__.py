"""steprl.envs."""
