"""The run directory and its files: `run_dir` creates and reopens `runs/<name>/` and writes environment.json and
summary.json, `lock` keeps one writer per directory, `checkpoint` writes and verifies atomic, hashed checkpoints,
and `state_io` stores their nested learner state as safetensors plus JSON, never pickle. These modules own the
on-disk formats that resume, replay, eval and report read back, so they sit low and import only `machine` (the
run directory keeps machine.json); metrics.jsonl belongs to `reporting`, rollout records to rollout/store.py."""
