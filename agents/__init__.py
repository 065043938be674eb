"""steprl.agents."""
