"""The orchestration layer: what a run does, from options to stored results.

Read top-down:

- `evaluate`: one scorer on some tasks, on one shared encoding plan -> `RunResult`s (plan,
  score, compute, record); the library entry point (`evaluate`, `evaluate_tasks`).
- `runner`: a `RunRequest` (models x tasks, one `RunConfig`) validated before any model loads,
  then each model loaded once and evaluated, one stored run per (model, task).
- `sweep`: a grid of requests from a sweep file, run here (`sweep.local`) or on SLURM
  (`sweep.slurm`); each cell is an ordinary run.
- `ranks`: the one step every torchrun rank takes together; `inspect`: what a split holds.

Scorer kinds (embedding, pair ...) come from the scorer catalog (`densecap_eval.scorers`),
options from `densecap_eval.core.config.RunConfig`.
"""
