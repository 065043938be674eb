"""steprl.learners: batches, advantages, losses, guards, the policy-gradient learner and warm-up SFT."""
