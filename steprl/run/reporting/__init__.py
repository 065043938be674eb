"""What a run records about itself and shows: `metrics` writes metrics.jsonl and evals.jsonl and feeds the logger
backends of `run.loggers` (`trackers/`, one module per backend) the same rows, `episodes` cuts trajectories into
what a person reads, `plots` draws every chart, and `report` with `report_data` make the HTML page of
`steprl report`. Nothing here changes what is trained; it imports `files` (to list checkpoints) and `machine`
at most, never the learner or the loop."""
