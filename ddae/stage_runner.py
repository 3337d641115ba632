"""The job of a registered stage with a runner (`ddae.pipeline.stages`, issue 21): one
checkpoint measured at the run's (layer, t) — the grid search's choice (Appendix B) or the
config's fixed pair (Table 9) — and the runner's record written through its result's contract.

A runner is ``function(config, *, checkpoint, sources, layer, t, steps, device) -> dict``: its
stage's config dataclass built from the run's block, the checkpoint path, the run's source files
(its dataset's ``train`` and ``test`` splits, or a DiT's ``latents``) and the pair. The record
gets its provenance here (``created_by``: the runner, ``checkpoint``: the path) and
`ddae.result_writers.write_json` refuses a value outside the contract, naming the field, before
anything is written. The rule and its script are generic (workflow/rules/evaluate.smk,
workflow/scripts/stage.py): a new stage needs no rule file.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from ddae.configs import from_mapping
from ddae.layer_choice import resolve_layer_t
from ddae.pipeline.stages import STAGES
from ddae.result_writers import write_json


def run_stage(
    name: str,
    *,
    checkpoint: str,
    sources: Mapping[str, str],
    choice: Sequence[str],
    config: Mapping[str, Any],
    layer_t: Mapping[str, int] | None,
    steps: int,
    output: str,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run stage ``name``'s runner on one checkpoint and write its result (module docstring);
    returns the record written."""
    stage = STAGES[name]
    layer, t, steps = resolve_layer_t(choice, layer_t, steps)
    settings = from_mapping(stage.config, dict(config), f"evaluation.{name}")
    module, _, function = stage.runner.partition(":")
    runner = getattr(importlib.import_module(module), function)
    record = runner(
        settings,
        checkpoint=checkpoint,
        sources=dict(sources),
        layer=layer,
        t=t,
        steps=steps,
        device=device,
    )
    record = {**record, "created_by": stage.runner, "checkpoint": checkpoint}
    write_json(output, record)
    return record
