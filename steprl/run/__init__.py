"""The run core: what the stages are built from, in five rooms by concern. `machine` (kernels, torch settings, the
machine fingerprint, heap trimming), `files` (the run directory, its lock, checkpoints and their state format),
`learning` (the learner at any world size, its weights channel and topology, the rebuild of recorded updates),
`reporting` (metrics, trackers, plots, the report) and `loop` (the run state, the one step loop, pools, warm-up SFT,
the one held-out evaluation, preflight). Rooms import downwards: `machine` no other room, `files` only `machine`,
`learning` and `reporting` only those two, `loop` any; no room holds more than 12 modules
(tests/layout/test_layout.py). A leaf layer: it never imports a stage or the CLI."""
