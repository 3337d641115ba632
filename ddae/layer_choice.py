"""The (layer, t) pair a stage evaluates at (paper Table 9: the pair the grid search of
Appendix B chose, or a fixed one): fine-tuning (`ddae.finetune`), alignment and uniformity
(Figure 3) and the noise-conditional head (Figure 6) read it here, without the probe code of
`ddae.probing`. Imports no torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ddae.configs import ConfigError
from ddae.result_files import read_grid_choice


def resolve_layer_t(
    choice: Sequence[str | Path], layer_t: Mapping[str, Any] | None, steps: int | None
) -> tuple[int, int, int]:
    """(layer, t, steps) from a `grid_search` JSON (``choice``, one file) or the config's fixed
    ``layer_t`` {layer, t} (e.g. Table 9); a grid's steps must match ``steps`` when given."""
    if choice:
        if len(choice) != 1:
            raise ConfigError(f"expected one grid-search choice file, got {list(choice)}")
        record = read_grid_choice(choice)  # validated: names the file and the bad key
        layer, t, grid_steps = record["layer"], record["t"], record["steps"]
        if steps is not None and grid_steps != int(steps):
            raise ConfigError(
                f"{choice[0]}: grid search used steps={grid_steps}, config says {steps}"
            )
        return layer, t, grid_steps
    if not isinstance(layer_t, Mapping) or set(layer_t) != {"layer", "t"}:
        raise ConfigError(f"layer_t: expected {{layer, t}} when there is no grid, got {layer_t!r}")
    if steps is None:
        raise ConfigError("steps: required when layer_t is given")
    return int(layer_t["layer"]), int(layer_t["t"]), int(steps)
