"""steprl.learners."""
