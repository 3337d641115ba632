"""The paper's reference values and what every table and figure of `ddae.report` shares.

The paper's numbers — Tables 2–9 and the values the text states for Figure 5 — come ONLY from
the package data ``ddae/reference/paper_results.yaml``; "ours" comes ONLY from the pipeline's
result files (`ddae.result_files`). Also here: where a result path says it was measured
(results/<dataset>/...), so that a miniature's number is never set beside a CIFAR-10 paper
value, and Table 9's layer numbering (paper Appendix B) in this project's convention.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ddae.paper_shape import stand_in_marker
from ddae.result_writers import write_text

if TYPE_CHECKING:  # the Snakefile imports this module while it plans: no pandas there
    import pandas as pd

log = logging.getLogger(__name__)

PathLike = str | Path
NOT_RUN = "not run"


@cache
def load_reference() -> dict[str, Any]:
    """The paper's numbers (package data ``ddae/reference/paper_results.yaml``)."""
    text = (Path(__file__).parents[1] / "reference" / "paper_results.yaml").read_text()
    return yaml.safe_load(text)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def result_dataset(path: PathLike | None) -> str | None:
    """The dataset of a pipeline result path ``results/<dataset>/...``, else None."""
    parts = Path(path).parts if path else ()
    return parts[parts.index("results") + 1] if "results" in parts[:-2] else None


def stand_in_dataset(path: PathLike | None) -> str | None:
    """What a result's dataset really is when it is a synthetic stand-in (the paper-shape
    miniature writes ``resources/data/<dataset>/stand_in.json`` beside its stand-ins, in the
    workdir that holds ``results/``), else None."""
    dataset = result_dataset(path)
    if not dataset:
        return None
    parts = Path(path).parts
    workdir = Path(*parts[: parts.index("results")]) if parts.index("results") else Path()
    stand_in = stand_in_marker(workdir, dataset).is_file()
    return f"the miniature's synthetic stand-in for {dataset}" if stand_in else None


def is_miniature(paper_key: str, path: PathLike | None) -> bool:
    """Whether a result stands in for paper model ``paper_key`` (e.g. cifar10_edm) but was
    measured on another dataset (results/digits/...) or on a synthetic stand-in of the paper's
    dataset (the paper-shape miniature)."""
    dataset = result_dataset(path)
    if not dataset:
        return False
    return not paper_key.startswith(f"{dataset}_") or stand_in_dataset(path) is not None


# --- Table 9's (layer, t) numbering (paper Appendix B) -----------------------------------------


def layer_text(layer: int, layers: int, name: str) -> str:
    return f"{int(layer)}/{int(layers)}" + (f" ({name})" if name else "")


def paper_in_our_numbering(paper: Mapping[str, Any]) -> dict[str, Any]:
    """A Table 9 entry in this project's numbering (layer k = k blocks deep, 1-based t).

    Entries marked ``zero_based`` (DiT: the authors' DiT/linear.py hooks ``blocks[idx]`` as
    ``layer-{idx}`` and noises at 0-based t; `ddae.networks.dit`) are shifted by one.
    """
    shift = 1 if paper.get("zero_based") else 0
    return {**paper, "layer": paper["layer"] + shift, "t": paper["t"] + shift}


def paper_layer_text(paper: Mapping[str, Any]) -> str:
    text = layer_text(paper["layer"], paper["layers"], paper["where"])
    if not paper.get("zero_based"):
        return text
    ours = paper_in_our_numbering(paper)
    return f"{text} (0-based: blocks.{paper['layer']} = {ours['layer']}/{paper['layers']} here)"


def paper_t_text(paper: Mapping[str, Any]) -> str:
    text = f"{paper['t']}/{paper['steps']}"
    if not paper.get("zero_based"):
        return text
    return f"{text} (0-based: {paper_in_our_numbering(paper)['t']}/{paper['steps']} here)"


def save_table(frame: pd.DataFrame, markdown: str, csv: PathLike, md: PathLike) -> None:
    """A table's two outputs: the long CSV (for machines) and its Markdown (for people)."""
    write_text(csv, frame.to_csv(index=False))
    write_text(md, markdown)
    log.info("wrote %s and %s", csv, md)
