"""Running pre-training as one pipeline job: one process, or `torchrun` with one per GPU.

`run_pretraining` is what the Snakemake rule calls. With more than one process it writes the job
description to a JSON file beside the run's partial state and starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m ddae.launch <job.json>``;
every worker then calls `ddae.training.train_to_epoch` with the same arguments, which joins the
process group itself. A single process trains in place.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddae.configs import from_mapping, to_mapping
from ddae.training import TrainOptions, train_to_epoch


@dataclass(frozen=True)
class PretrainingJob:
    run: dict[str, Any]  # {network, framework, training} mappings
    dataset: str  # training split file (ImageDataset)
    output: str  # checkpoint to write at target_epoch
    target_epoch: int
    start: str | None  # previous checkpoint of the chain, None for the first
    state_dir: str  # partial state, kept outside the job's declared outputs
    metrics: str | None = None  # jsonl metrics log of the run
    processes: int = 1  # torchrun workers (one per GPU)
    device: str = "cuda"  # "cuda" or "cpu"
    snapshot_every_seconds: float = 600.0
    snapshot_every_steps: int = 0
    progress: bool = True


def _options(job: PretrainingJob, device: str | None) -> TrainOptions:
    return TrainOptions(
        state_dir=Path(job.state_dir),
        snapshot_every_seconds=job.snapshot_every_seconds,
        snapshot_every_steps=job.snapshot_every_steps,
        metrics_path=Path(job.metrics) if job.metrics else None,
        progress=job.progress,
        device=device,
    )


def _train(job: PretrainingJob) -> None:
    """Train in this process (on the CPU, or the GPU torchrun's LOCAL_RANK selects)."""
    options = _options(job, "cpu" if job.device == "cpu" else None)
    train_to_epoch(job.run, job.dataset, job.output, job.target_epoch, job.start, options)


def run_pretraining(job: PretrainingJob) -> None:
    """Train `job` to its target epoch, under torchrun when it asks for several processes."""
    if job.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"{job.output}: this job asks for {job.processes} GPU(s) but CUDA is not available; "
            "set the run's gpus to 0 to train on the CPU"
        )
    if job.processes == 1:
        _train(job)
        return
    spec = Path(job.state_dir) / "torchrun_job.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(to_mapping(job), indent=2))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={job.processes}",
        "-m",
        "ddae.launch",
        str(spec),
    ]
    logging.getLogger(__name__).info("launching %s", " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{job.output}: torchrun exited with status {completed.returncode}")


def _worker(spec_path: str) -> None:
    """Entry point of one torchrun worker."""
    _train(from_mapping(PretrainingJob, json.loads(Path(spec_path).read_text()), spec_path))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _worker(sys.argv[1])
