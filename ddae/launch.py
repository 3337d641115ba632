"""Running a training job as one pipeline job: one process, or `torchrun` with one per GPU.

`run_job(function, job)` serves every multi-GPU job of the pipeline: pre-training (paper Table
5, `run_pretraining`) and the classifier trainings of Sec. 4.1 (`ddae.finetune`). It knows no
job kinds: ``function`` is the importable name ("module:function") of what every worker runs
with the job dataclass. With more than one process the job is written to a JSON file
``{"function", "job_type", "job"}`` beside the job's partial state and
``python -m torch.distributed.run --standalone --nproc_per_node N -m ddae.launch <job.json>``
starts the workers; each imports the job's dataclass and the function by name, rebuilds the
job with `from_mapping` and calls the function, which joins the process group itself
(`ddae.distributed`). A single process runs the function in place.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddae.configs import from_mapping, to_mapping
from ddae.training import TrainOptions
from ddae.training_resume import train_to_epoch


@dataclass(frozen=True, kw_only=True)
class JobExecution:
    """How a training job runs, whatever it trains: where it keeps its partial state and
    metrics, its processes and device, how often it snapshots. Job dataclasses extend it and
    name their ``target`` (the file the job writes last)."""

    state_dir: str  # partial state (and the torchrun job file), outside the declared outputs
    metrics: str | None = None  # jsonl metrics log, one line per epoch
    processes: int = 1  # torchrun workers (one per GPU)
    device: str = "cuda"  # "cuda" or "cpu"
    snapshot_every_seconds: float = 600.0
    snapshot_every_steps: int = 0
    progress: bool = True

    @property
    def target(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class PretrainingJob(JobExecution):
    run: dict[str, Any]  # {network, framework, training} mappings
    dataset: str  # training split file (ImageDataset)
    output: str  # checkpoint to write at target_epoch
    target_epoch: int
    start: str | None  # previous checkpoint of the chain, None for the first

    @property
    def target(self) -> str:
        return self.output


def _options(job: PretrainingJob, device: str | None) -> TrainOptions:
    return TrainOptions(
        state_dir=Path(job.state_dir),
        snapshot_every_seconds=job.snapshot_every_seconds,
        snapshot_every_steps=job.snapshot_every_steps,
        metrics_path=Path(job.metrics) if job.metrics else None,
        progress=job.progress,
        device=device,
    )


def train_pretraining(job: PretrainingJob) -> None:
    """Train in this process (on the CPU, or the GPU torchrun's LOCAL_RANK selects)."""
    options = _options(job, "cpu" if job.device == "cpu" else None)
    train_to_epoch(job.run, job.dataset, job.output, job.target_epoch, job.start, options)


def run_pretraining(job: PretrainingJob) -> None:
    """Train `job` to its target epoch, under torchrun when it asks for several processes."""
    run_job("ddae.launch:train_pretraining", job)


def importable(name: str) -> Any:
    """The object ``module:attribute`` names."""
    module, _, attribute = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{name!r} is not an importable 'module:attribute' ({error})") from error


def run_job(function: str, job: Any) -> None:
    """Run ``function`` ("module:function") on `job` here, or under torchrun with
    job.processes workers.

    The job dataclass needs ``processes``, ``device`` ("cuda" or "cpu"), ``state_dir`` (where
    the torchrun job file goes) and a ``target`` naming its output for error messages.
    """
    worker = importable(function)
    if job.processes < 1:
        raise ValueError(f"{job.target}: processes must be at least 1, got {job.processes}")
    if job.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"{job.target}: this job asks for {job.processes} GPU(s) but CUDA is not available; "
            "set the job's gpus to 0 to run on the CPU"
        )
    if job.device == "cuda" and torch.cuda.device_count() < job.processes:
        raise RuntimeError(
            f"{job.target}: this job asks for {job.processes} GPUs but only "
            f"{torch.cuda.device_count()} are visible"
        )
    if job.processes == 1:
        worker(job)
        return
    job_type = f"{type(job).__module__}:{type(job).__qualname__}"
    spec = Path(job.state_dir) / f"torchrun_{function.rpartition(':')[2]}.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    record = {"function": function, "job_type": job_type, "job": to_mapping(job)}
    spec.write_text(json.dumps(record, indent=2))
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
        raise RuntimeError(f"{job.target}: torchrun exited with status {completed.returncode}")


def _worker(spec_path: str) -> None:
    """Entry point of one torchrun worker."""
    data = json.loads(Path(spec_path).read_text())
    job_type, function = importable(data["job_type"]), importable(data["function"])
    function(from_mapping(job_type, data["job"], f"{spec_path}:job"))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _worker(sys.argv[1])
