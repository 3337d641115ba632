"""Pre-training as a chain of jobs per run (paper Appendix A, Table 5; workflow/rules/pretrain.smk):
which file each job starts from, with ``segment_epochs``, and its scheduling resources.

epoch<E>.pt is trained from the run's previous listed epoch; with ``segment_epochs: N`` a job
spanning more than N epochs is split into jobs of at most N epochs whose intermediate states
are results/<dataset>/<run>/segments/epoch<S>.pt. A start checkpoint is verified while
Snakemake plans (`ddae.planning_checks`). Imports no torch: every cluster job re-parses the
rules.
"""

from __future__ import annotations

from typing import Any

from ddae.pipeline.layout import RUN_DIRECTORY, Layout
from ddae.pipeline.rule_functions import rule_functions
from ddae.planning_checks import verified_input


@rule_functions
class PretrainingChain:
    """The pretrain and pretrain_segment rules' input and resource functions for a config."""

    # the run's partial state and training metrics: patterns of the job's wildcards
    state_dir = f"{RUN_DIRECTORY}/partial"
    metrics = f"{RUN_DIRECTORY}/metrics.jsonl"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def segment_path(self, run: str, epoch: int) -> str:
        return f"{self.layout.run_directory(run)}/segments/epoch{epoch}.pt"

    def links(self, run: str, epoch: int) -> tuple[int, list[int]]:
        """The jobs that end at listed checkpoint `epoch`: (previous listed epoch, segment
        ends)."""
        spec = self.layout.pretraining[run]
        earlier = [e for e in spec["epochs"] if e < epoch]
        first = earlier[-1] if earlier else 0
        every = spec.get("segment_epochs", 0)
        return first, list(range(first + every, epoch, every)) if every else []

    def job(self, wildcards: Any, segment: bool = False) -> tuple[int, str | None]:
        """(start epoch, start file or None) of the job ending at the wildcards' epoch."""
        run = self.layout.pretraining_run(wildcards)
        epoch = int(wildcards.epoch)
        if segment:
            owner = next((e for e in run["epochs"] if e > epoch), None)
            first, ends = self.links(wildcards.run, owner) if owner else (0, [])
            if epoch not in ends:
                raise ValueError(
                    f"epoch {epoch} is not a segment end of pretraining.{wildcards.run} "
                    f"(epochs {run['epochs']}, segment_epochs {run.get('segment_epochs')})"
                )
        else:
            if epoch not in run["epochs"]:
                raise ValueError(
                    f"epoch {epoch} is not in pretraining.{wildcards.run}.epochs {run['epochs']}"
                )
            first, ends = self.links(wildcards.run, epoch)
            ends = [*ends, epoch]
        position = ends.index(epoch)
        if position > 0:
            return ends[position - 1], self.segment_path(wildcards.run, ends[position - 1])
        return first, self.layout.checkpoint_path(wildcards.run, first) if first else None

    def start(self, wildcards: Any) -> list[str]:
        """The checkpoint (listed epoch or segment) a pretrain job continues from; [] =
        scratch."""
        path = self.job(wildcards)[1]
        return [verified_input(path)] if path else []

    def segment_start(self, wildcards: Any) -> list[str]:
        path = self.job(wildcards, segment=True)[1]
        return [verified_input(path)] if path else []

    def runtime(self, wildcards: Any, segment: bool = False) -> int:
        """Walltime in minutes for the epochs one job trains, with a margin."""
        span = int(wildcards.epoch) - self.job(wildcards, segment)[0]
        return int(30 + 1.2 * span * self.layout.pretraining_run(wildcards)["minutes_per_epoch"])

    def segment_runtime(self, wildcards: Any) -> int:
        return self.runtime(wildcards, segment=True)

    def snapshot_seconds(self, wildcards: Any) -> int:
        """How often a running job saves its partial state (scheduling only, not a param)."""
        return round(60 * self.layout.pretraining_run(wildcards).get("snapshot_minutes", 10))
