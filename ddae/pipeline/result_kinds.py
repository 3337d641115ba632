"""The kinds of pipeline result files and where each lies (issue 21): one contract per kind
(keys or columns, types, ranges) and, per place in the results tree, the provenance a file there
must record. Checked by `ddae.pipeline.result_checks`; the planning API is
`ddae.pipeline.contracts`.

A `Field`'s range is the writer's: accuracies are percentages (`ddae.probing`, `ddae.finetune`),
sigma is a noise level's (`ddae.diffusion`), alignment and uniformity are Eq. 3-4 of the paper
(`ddae.alignment`, after Wang & Isola 2020), layer k of N and t/steps are Table 9's. Ranges that
depend on the run come from the caller: ``layers`` (the network's decoder blocks,
`ddae.paper_shape.decoder_layer_count`) and ``levels`` (the run's noise levels).

Imports no torch, numpy or pandas: the planning process imports it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ddae.pipeline.stages import result_files

NUMBER, INTEGER, TEXT, ROWS = "number", "integer", "text", "grid rows"
PathLike = str | os.PathLike


@dataclass(frozen=True)
class Field:
    """One key or column: its type, its range (``low``/``high`` inclusive unless ``above``:
    low exclusive), whether JSON null is allowed, and what the value is (for messages)."""

    type: str
    low: float = -math.inf
    high: float = math.inf
    above: bool = False
    null: bool = False
    meaning: str = ""

    def range_text(self) -> str:
        low = f"{'(' if self.above or self.low == -math.inf else '['}{number_text(self.low)}"
        high = f"{number_text(self.high)}{']' if self.high < math.inf else ')'}"
        return f"{low}, {high}" + (f" ({self.meaning})" if self.meaning else "")


def number_text(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)


@dataclass(frozen=True)
class Contract:
    """A result kind: required keys/columns and (JSON only) keys checked when present."""

    form: str  # "json" or "csv"
    fields: Mapping[str, Field]
    optional: Mapping[str, Field] = field(default_factory=dict)


# Values and their ranges; the writers named beside each record them.
PERCENT = Field(NUMBER, 0, 100, meaning="a test accuracy in percent")  # probing, finetune
LAYER = Field(INTEGER, 1, meaning="decoder layer k of N, Table 9")  # probing.decoder_blocks
T = Field(INTEGER, 1, meaning="a noise level, 1..steps")  # Table 9's t/steps
STEPS = Field(INTEGER, 1)
SIGMA = Field(NUMBER, 0, above=True, meaning="the noise level's sigma")  # diffusion schedules
ALIGNMENT = Field(NUMBER, 0, meaning="Eq. 3, a mean squared distance")  # ddae.alignment
UNIFORMITY = Field(NUMBER, high=0, meaning="Eq. 4, log of a mean of exp(-2 d^2)")
NAME = Field(TEXT)
PROVENANCE = {"created_by": Field(TEXT), "checkpoint": Field(TEXT, null=True)}
PROBE_PAIR = {"layer": LAYER, "steps": STEPS, "t": T, "sigma": SIGMA}  # steps bounds t
GRID_ROW = {"layer": LAYER, "layer_name": NAME, **PROBE_PAIR, "test_accuracy": PERCENT}

JSON_KINDS: dict[str, Contract] = {
    # any classifier's accuracy: also the supervised WRN and scratch, whose pair may be null
    "accuracy": Contract(
        "json",
        {"test_accuracy": PERCENT, **PROVENANCE},
        {key: replace(value, null=True) for key, value in PROBE_PAIR.items()},
    ),
    # a linear probe or fine-tuning at the run's (layer, t) (ddae.probing, ddae.finetune)
    "probe": Contract("json", {"test_accuracy": PERCENT, **PROBE_PAIR, **PROVENANCE}),
    "fid": Contract(  # ddae.fid.sample_and_score
        "json",
        {"fid": Field(NUMBER, 0), "extractor": NAME, "samples": Field(INTEGER, 1), **PROVENANCE},
    ),
    # ddae.probing.pixel_probe: the raw-pixel reference of the miniature's findings
    "pixel_probe": Contract(
        "json", {"test_accuracy": PERCENT, "num_classes": Field(INTEGER, 2), **PROVENANCE}
    ),
    # ddae.probing.grid_search.write_grid: the best cell of grid/epoch<E>.csv plus provenance
    "grid_choice": Contract(
        "json",
        {"layer": LAYER, "steps": STEPS, "t": T, "test_accuracy": PERCENT, **PROVENANCE},
        {"sigma": SIGMA, "layer_name": NAME},
    ),
    # ddae.grid_timesteps.probe_timestep: one t's grid rows
    "grid_timestep": Contract("json", {"steps": STEPS, "t": T, "rows": Field(ROWS), **PROVENANCE}),
}
CSV_KINDS: dict[str, Contract] = {
    "grid": Contract("csv", GRID_ROW),  # ddae.probing.grid_search.GRID_CSV_COLUMNS
    "align_uniform": Contract(  # ddae.alignment.CSV_COLUMNS
        "csv",
        {
            "layer": LAYER,
            "layer_name": NAME,
            **PROBE_PAIR,
            "alignment": ALIGNMENT,
            "uniformity": UNIFORMITY,
        },
    ),
    "noisy": Contract("csv", {"steps": STEPS, "t": T, "sigma": SIGMA, "test_accuracy": PERCENT}),
}
CONTRACTS = {**JSON_KINDS, **CSV_KINDS}

# Where each kind lies under results/<dataset>/, and its provenance there: the created_by of the
# stage's writer (none for the CSVs, which record none) and whether the result is of the
# path's checkpoint (True) or of none (False: scratch, raw pixels, the supervised baselines).
# Each stage declares its files once, in the stage registry (ddae.pipeline.stages).
RESULT_FILES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = result_files()
_PLACEHOLDERS = {
    "run": r"[^/]+",
    "epoch": r"\d+",
    "layer": r"\d+",
    "t": r"\d+",
    "perturbation": r"vp|ve",
}


def _regex(pattern: str) -> re.Pattern[str]:
    body = re.sub(
        r"\\\{(\w+)\\\}", lambda m: f"(?P<{m[1]}>{_PLACEHOLDERS[m[1]]})", re.escape(pattern)
    )
    return re.compile(rf"(?:^|.*/)results/(?P<dataset>[^/]+)/{body}")


_LAYOUT = [(_regex(pattern), kind, writers, own) for pattern, kind, writers, own in RESULT_FILES]


@dataclass(frozen=True)
class ResultPath:
    """A result file at its place: its kind and the provenance the place implies."""

    kind: str
    dataset: str
    run: str | None  # None for the dataset's baselines (results/<dataset>/baselines/)
    writers: tuple[str, ...]
    checkpoint: str | None  # results/<dataset>/<run>/checkpoints/epoch<E>.pt, or None
    named: Mapping[str, int]  # values the path names: a named pair's layer and t, a per-t t

    @property
    def form(self) -> str:
        return CONTRACTS[self.kind].form


def locate(path: PathLike) -> ResultPath | None:
    """The kind and provenance of a pipeline result path, or None for any other path."""
    text = Path(path).as_posix()
    for regex, kind, writers, own in _LAYOUT:
        match = regex.fullmatch(text)
        if match:
            parts = match.groupdict()
            checkpoint = None
            if own:
                checkpoint = (
                    f"results/{parts['dataset']}/{parts['run']}/checkpoints/"
                    f"epoch{int(parts['epoch'])}.pt"
                )
            named = {key: int(parts[key]) for key in ("layer", "t") if parts.get(key)}
            run = parts.get("run")
            return ResultPath(kind, parts["dataset"], run, writers, checkpoint, named)
    return None
