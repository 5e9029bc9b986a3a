"""Which task each requested name runs under the run's ``--protocol``: the one place that says so.

`run_tasks` is called by `evaluate_tasks` (so ``evaluate(...)`` gets it) and by the runner
(`RunRequest.run_tasks`: validation, the data roots it checks, the run cards it opens), which
``run`` and every sweep cell go through. ``default`` and ``elevater-dci`` keep every name;
``clip_benchmark`` runs CLIP_benchmark's protocol, which is defined on CLIP_benchmark's own
``wds`` copies (their class names, templates and splits), so ``elevater`` and ``elevater/<key>``
become ``clip_benchmark`` and ``clip_benchmark/<key>`` (docs/protocols/elevater.md, "Protocols").
The benchmark's own rules (which keys have a copy, which task takes which protocol) live in
`densecap_eval.datasets.elevater.protocol`.
"""

from __future__ import annotations

from collections.abc import Sequence

from densecap_eval.core.config import ConfigError
from densecap_eval.tasks import concrete_tasks


def run_tasks(tasks: Sequence[str], protocol: str) -> dict[str, str]:
    """Each requested task name (duplicates dropped, order kept) -> the task the run computes
    and stores under ``protocol``.

    Raises `ConfigError` (a usage error) for a name the protocol has no data for, a task the
    protocol does not apply to, or two names that become one task.
    """
    names = list(dict.fromkeys(tasks))
    if protocol == "default":  # no ELEVATER table to read: the CLI's start stays cheap
        return {name: name for name in names}
    from densecap_eval.datasets.elevater.protocol import check_protocol, protocol_task

    resolved = {name: protocol_task(name, protocol) for name in names}
    first: dict[str, str] = {}
    for name, task in resolved.items():
        if task in first:
            raise ConfigError(
                f"--task {first[task]} and --task {name} are the same task under --protocol "
                f"{protocol} ({task}); give it once"
            )
        first[task] = name
    check_protocol(concrete_tasks(list(resolved.values())), protocol)
    return resolved
