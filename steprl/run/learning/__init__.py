"""The learner the RL stage drives, at any world size: `learner` is the one protocol (world size 1 in the driver),
`learner_group` and `learner_rank` are the N > 1 Ray actors in one torch.distributed group, `ranks` holds what
every rank shares, `trainers` builds the RL trainer (the same one in the driver, every rank and replay), `channels`
and `weights` carry rank 0's weights to the rollout workers and name them, `topology` lists the devices, channels
and communicators a config implies, and `rebuild` re-runs recorded updates from a checkpoint for `steprl replay`,
checking the weights on the way. It imports `machine` and `files` only."""
