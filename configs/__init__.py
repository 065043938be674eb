"""steprl.configs."""
