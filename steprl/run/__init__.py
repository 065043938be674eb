"""The run core: typed run state, the one step loop, the one held-out evaluation, checkpoints,
the run directory and metrics. A leaf layer: it never imports a stage or the CLI."""
