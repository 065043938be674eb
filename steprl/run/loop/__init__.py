"""What the stages are built from: `state` is the typed `RunState` they share, `loop` the one step loop
`run_steps` of RL and distillation, `pools` the rollout pools built from a config, `sft` and `demos` the warm-up
on expert demonstrations and its cache, `evaluate` the one held-out evaluation, and `preflight` the checks made
before a run directory is created. The last room: it may import every other room, and none imports it."""
