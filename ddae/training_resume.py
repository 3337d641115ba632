"""Diffusion pre-training of one run to a target epoch as one job (paper Appendix A, Table 5):
`train_to_epoch` trains one run (network + framework + training settings) with
`ddae.training.Trainer` until `target_epoch` completed epochs and writes a checkpoint there.
It starts from, in order of preference:

1. the run's partial state (``state_dir/partial.pt``), written every few minutes and at
   ``kill -9`` safe points, if it belongs to this run config and lineage and lies between the
   start checkpoint and the target;
2. the given start checkpoint (the previous epoch of the chain);
3. scratch.

A partial state of another run config, another lineage, outside that range or whose epochs are
cut into another number of steps is ignored with a warning naming why; a corrupt one is an
error. One process per run's state writes it (`ddae.checkpoints.partial_state_lock`), the
metrics log is cut back to the step resumed (`ddae.result_writers.drop_metrics_after`), and the
partial state is removed once the checkpoint is written. Resuming is bitwise: 2 epochs in one go
and 1 + resume + 1 give identical weights on CPU (`ddae.training`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddae.checkpoints import CheckpointError, load_checkpoint, partial_state_lock
from ddae.datasets.format import ImageDataset
from ddae.distributed import close_world, init_world
from ddae.result_writers import drop_metrics_after
from ddae.training import PARTIAL_STATE, Trainer, TrainOptions

log = logging.getLogger(__name__)


def _choose_start(
    trainer: Trainer, start: Path | None, state_dir: Path | None, target_epoch: int
) -> tuple[Mapping[str, Any] | None, Path | None]:
    """The newest usable saved state: the partial state if it continues `start`, else `start`."""
    start_payload = load_checkpoint(start) if start is not None else None
    if start_payload is not None and start_payload.get("run") != trainer.run:
        raise CheckpointError(f"{start}: start checkpoint was trained with a different run config")
    partial = state_dir / PARTIAL_STATE if state_dir is not None else None
    if partial is None or not partial.exists():
        return start_payload, start
    payload = load_checkpoint(partial)  # corrupt partial state is an error, never ignored
    target_step = target_epoch * trainer.steps_per_epoch
    start_step = start_payload["step"] if start_payload else 0
    reasons = []
    if payload.get("run") != trainer.run:
        reasons.append("run config changed")
    if start_payload is not None and payload.get("lineage") != start_payload.get("lineage"):
        reasons.append("it does not continue the start checkpoint")
    if not start_step <= payload["step"] <= target_step:
        reasons.append(f"step {payload['step']} is outside {start_step}..{target_step}")
    if not trainer.cut_alike(payload):
        reasons.append(f"its epochs are not {trainer.steps_per_epoch} steps long")
    if reasons:
        log.warning("ignoring partial state %s: %s", partial, "; ".join(reasons))
        return start_payload, start
    return payload, partial


def train_to_epoch(
    run: Mapping[str, Any],
    dataset_path: str | Path,
    output: str | Path,
    target_epoch: int,
    start: str | Path | None = None,
    options: TrainOptions | None = None,
) -> None:
    """Train `run` on the dataset file until `target_epoch` and write the checkpoint `output`.

    Works the same as a single process and under ``torchrun``; resumes from the partial state in
    ``options.state_dir`` when a previous attempt was interrupted.
    """
    options = options or TrainOptions()
    world = init_world(options.device)
    held = contextlib.ExitStack()
    try:
        if world.is_main and options.state_dir is not None:  # one writer per run's state
            held.enter_context(partial_state_lock(options.state_dir))
        trainer = Trainer(run, ImageDataset.load(dataset_path), world)
        start = Path(start) if start is not None else None
        payload, source = _choose_start(trainer, start, options.state_dir, target_epoch)
        if payload is not None:
            if payload["epoch"] > target_epoch:
                raise CheckpointError(f"{source}: already past epoch {target_epoch}")
            trainer.load(payload, source)
            if source != start:  # an interrupted job's partial state: mark it in the metrics
                trainer.resumed_from = payload["step"]
            if world.is_main:
                epoch, step = payload["epoch"], payload["step"]
                log.info("resuming from %s at epoch %s step %s", source, epoch, step)
        if world.is_main:
            drop_metrics_after(options.metrics_path, trainer.state.step)
        trainer.run_to(target_epoch, options)
        trainer.save(Path(output))
        if world.is_main:
            log.info("wrote %s: trained to epoch %d on %s", output, target_epoch, dataset_path)
        if world.is_main and options.state_dir is not None:
            (options.state_dir / PARTIAL_STATE).unlink(missing_ok=True)
    finally:
        held.close()
        close_world(world)
