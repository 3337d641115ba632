"""Fine-tuning truncated DDAE encoders and the supervised baselines (paper Sec. 4.1, App. A).

Four rules share one model head and one training loop (`ddae.classifier_training`):

- `finetune` (Table 7): the pre-trained diffusion network (EMA weights, as the official
  linear.py) is truncated after the chosen decoder block ("layer k/N", Table 9); clean images
  go in, the timestep input is fixed to the chosen t ("For fine-tuning, clean images are passed
  to DDAE encoders, which are truncated at the optimal layers. The timestep inputs are also
  fixed to the optimal values", Sec. 3.2); the block output is globally average-pooled and fed
  to a linear classifier (no extra normalisation layer, App. A); everything is trained end to
  end with Adam 1e-3 and cosine decay.
- `finetune_dit` (Table 7, DiT rows; Sec. 4.2): the same for a DiT on cached VAE latents
  (`ddae.latents.LatentData`: one random augmented latent version per image and epoch), block
  tokens averaged, null class label; Adam 8e-5, batch 8 × 8 GPUs, 50 epochs.
- `train_from_scratch` (Table 8, Figure 5 "Scratch"): the same truncated encoder, randomly
  initialised, Adam 5e-4, 200 epochs with 5 warm-up epochs.
- `train_supervised_wrn` (Table 8): WideResNet-28-10, SGD 0.1 (momentum 0.9, weight decay
  5e-4 in the official noisy_classifier_WRN.py), 200 epochs with 5 warm-up epochs.

Each runs in one process or under ``torchrun`` through `ddae.launch.run_job` and writes the
result JSON of CONTRACT.md (test accuracy in percent, layer, t, σ, per-epoch history).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ddae.checkpoints import load_network, partial_state_lock
from ddae.classifier_training import (
    PARTIAL_STATE,
    ClassifierData,
    ClassifierOptions,
    ClassifierTrainer,
    ClassifierTrainingConfig,
    ImageData,
)
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.diffusion import Framework, build_framework, framework_config
from ddae.distributed import close_world, init_world
from ddae.downloads import file_md5
from ddae.latents import LatentData, latent_fingerprint, load_latents
from ddae.networks import build_network, count_parameters, network_config, network_spec
from ddae.results import drop_metrics_after, write_json

log = logging.getLogger(__name__)


class TruncatedClassifier(nn.Module):
    """Clean x0 in [-1, 1] → truncated diffusion encoder at fixed t → GAP → Linear.

    ``features(x0)`` equals, bitwise, the mean over (H, W) of what a forward hook on
    ``network.decoder_blocks()[layer - 1]`` sees when the full network is run on
    ``framework.network_inputs(x0, σ)`` with σ = ``framework.sigma_at_timestep(t, steps)``.
    """

    def __init__(
        self,
        network: nn.Module,
        framework: Framework,
        layer: int,
        t: int,
        steps: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.framework = framework
        self.layer, self.t, self.steps = layer, t, steps
        self.sigma = framework.sigma_at_timestep(t, steps)
        self.encoder = network.truncated(layer)
        self.layer_name = self.encoder.layer_name
        self.head = nn.Linear(self.encoder.out_channels, num_classes)

    def features(self, x0: torch.Tensor) -> torch.Tensor:
        """Pooled block output (B, C) for clean images x0 (B, C_img, H, W) in [-1, 1]."""
        sigma = torch.full((x0.shape[0],), self.sigma, dtype=torch.float64, device=x0.device)
        net_input, noise_labels = self.framework.network_inputs(x0, sigma)
        return self.encoder(net_input, noise_labels).float().mean(dim=(2, 3))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x0))  # (B, num_classes)


@dataclass(frozen=True)
class ClassifierJob:
    """One classifier training: what `ddae.launch` hands every torchrun worker."""

    created_by: Literal["finetune", "finetune_dit", "train_from_scratch", "train_supervised_wrn"]
    config: dict[str, Any]  # ClassifierTrainingConfig mapping
    out_json: str
    state_dir: str  # partial state and the torchrun job file
    train: str | None = None  # training split (ImageDataset file); not for finetune_dit
    test: str | None = None  # test split, evaluated un-augmented; not for finetune_dit
    latents: str | None = None  # finetune_dit: `ddae.latents.cache_latents` directory
    metrics: str | None = None  # jsonl, one line per epoch
    checkpoint: str | None = None  # finetune: pre-trained checkpoint (EMA weights)
    run: dict[str, Any] | None = None  # scratch: {network, framework}
    network: dict[str, Any] | None = None  # supervised_wrn: {"arch": "wide_resnet", ...}
    layer: int | None = None  # 1-based decoder block (Table 9 "k/N")
    t: int | None = None  # Table 9 "t/steps"
    steps: int | None = None
    processes: int = 1  # torchrun workers (one per GPU)
    device: str = "cuda"  # "cuda" or "cpu"
    snapshot_every_seconds: float = 600.0
    snapshot_every_steps: int = 0
    eval_every: int = 1
    progress: bool = True

    @property
    def target(self) -> str:
        return self.out_json


def _scratch_run(run: Mapping[str, Any], where: str = "run") -> dict[str, Any]:
    """Validated ``{network, framework}`` with every default filled in."""
    if not isinstance(run, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {run!r}")
    unknown = sorted(set(run) - {"network", "framework"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: framework, network)")
    for key in ("network", "framework"):
        if key not in run:
            raise ConfigError(f"{where}.{key}: required key is missing")
    network = network_config(run["network"], f"{where}.network")
    framework = framework_config(run["framework"], f"{where}.framework")
    return {
        "network": {"arch": run["network"]["arch"], **to_mapping(network)},
        "framework": {"kind": run["framework"]["kind"], **to_mapping(framework)},
    }


def _submit(
    created_by: str,
    config: Mapping[str, Any] | ClassifierTrainingConfig,
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    **fields: Any,
) -> None:
    """Assemble the `ClassifierJob` (paths as strings, the config as a mapping), check its
    config and run it, in this process or under torchrun."""
    from ddae.launch import run_job  # ddae.launch imports this module

    job = ClassifierJob(
        created_by=created_by,
        config=_config_mapping(config),
        out_json=str(out_json),
        metrics=str(metrics_path) if metrics_path is not None else None,
        state_dir=str(state_dir),
        **fields,
    )
    from_mapping(ClassifierTrainingConfig, job.config, f"{job.created_by}.config")
    run_job("classifier", job)


def _config_mapping(config: Mapping[str, Any] | ClassifierTrainingConfig) -> dict[str, Any]:
    return to_mapping(config) if isinstance(config, ClassifierTrainingConfig) else dict(config)


def finetune(
    checkpoint: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    layer: int,
    t: int,
    steps: int,
    config: Mapping[str, Any] | ClassifierTrainingConfig,
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    processes: int = 1,
    device: str = "cuda",
    **options: Any,
) -> None:
    """Fine-tune the checkpoint's network truncated at ``layer``, timestep fixed to t (Table 7).

    ``options``: snapshot_every_seconds, snapshot_every_steps, eval_every, progress.
    """
    _submit(
        "finetune",
        config,
        out_json,
        metrics_path,
        state_dir,
        checkpoint=str(checkpoint),
        train=str(train_path),
        test=str(test_path),
        layer=layer,
        t=t,
        steps=steps,
        processes=processes,
        device=device,
        **options,
    )


def finetune_dit(
    checkpoint: str | Path,
    latent_dir: str | Path,
    layer: int,
    t: int,
    steps: int,
    config: Mapping[str, Any] | ClassifierTrainingConfig,
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    processes: int = 1,
    device: str = "cuda",
    **options: Any,
) -> None:
    """Fine-tune a DiT truncated after block ``layer`` on cached VAE latents (Table 7, DiT).

    Table 7: Adam, base lr 8e-5, cosine decay, 8 latents per GPU × 8 GPUs, 50 epochs. The DiT
    (EMA weights) is cut after block ``layer`` (`ddae.networks.dit.DiTEncoder`), its timestep
    input fixed to t/steps and its class input to the null label; clean latents go in (Sec.
    3.2), the output tokens are averaged and fed to a linear head (`TruncatedClassifier`). Each
    epoch every image uses one random latent version (`ddae.latents.epoch_copies`, seeded by the
    config's seed), with no further flip or crop: ``hflip`` and ``crop_padding`` default to off
    here and must stay off. The test latents are evaluated after every epoch. Result JSON as
    `finetune` plus ``latents``; resumable and multi-process in the same way.
    """
    mapping = {"hflip": False, "crop_padding": 0, **_config_mapping(config)}
    if mapping["hflip"] or mapping["crop_padding"]:
        raise ConfigError(
            "training.hflip/crop_padding: the cached latent versions are already augmented "
            "(paper App. A); DiT fine-tuning applies no further flip or crop, set "
            "hflip: false and crop_padding: 0"
        )
    _submit(
        "finetune_dit",
        mapping,
        out_json,
        metrics_path,
        state_dir,
        checkpoint=str(checkpoint),
        latents=str(latent_dir),
        layer=layer,
        t=t,
        steps=steps,
        processes=processes,
        device=device,
        **options,
    )


def train_from_scratch(
    run: Mapping[str, Any],
    train_path: str | Path,
    test_path: str | Path,
    layer: int,
    t: int,
    steps: int,
    config: Mapping[str, Any] | ClassifierTrainingConfig,
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    processes: int = 1,
    device: str = "cuda",
    **options: Any,
) -> None:
    """Train the same truncated encoder from a random initialisation (Table 8, Figure 5)."""
    _submit(
        "train_from_scratch",
        config,
        out_json,
        metrics_path,
        state_dir,
        run=_scratch_run(run),
        train=str(train_path),
        test=str(test_path),
        layer=layer,
        t=t,
        steps=steps,
        processes=processes,
        device=device,
        **options,
    )


def train_supervised_wrn(
    network: Mapping[str, Any],
    train_path: str | Path,
    test_path: str | Path,
    config: Mapping[str, Any] | ClassifierTrainingConfig,
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    processes: int = 1,
    device: str = "cuda",
    **options: Any,
) -> None:
    """Train a WideResNet (28-10 in the paper) on the images from scratch (Table 8)."""
    if not isinstance(network, Mapping) or network.get("arch") != "wide_resnet":
        raise ConfigError(
            f"network.arch: the supervised baseline is 'wide_resnet', got {network!r}"
        )
    network_config(network, "network")
    _submit(
        "train_supervised_wrn",
        config,
        out_json,
        metrics_path,
        state_dir,
        network=dict(network),
        train=str(train_path),
        test=str(test_path),
        processes=processes,
        device=device,
        **options,
    )


# --- the job, in every worker -----------------------------------------------------------------


def _model_and_record(job: ClassifierJob, data: ClassifierData) -> tuple[Any, dict[str, Any]]:
    """A builder of the job's classifier, and what the result JSON records about the model."""
    classes = data.num_classes
    if job.created_by == "train_supervised_wrn":
        spec = dict(job.network or {})
        spec.setdefault("num_classes", classes)
        if spec["num_classes"] != classes:
            raise ConfigError(f"network.num_classes {spec['num_classes']} != {classes} classes")
        spec = network_spec(build_network(spec))  # defaults filled in

        return (lambda: build_network(spec)), {"network": spec, "checkpoint": None}
    if job.layer is None or job.t is None or job.steps is None:
        raise ConfigError(f"{job.created_by}: layer, t and steps are required")
    if job.created_by in ("finetune", "finetune_dit"):
        pretrained, framework, run = load_network(job.checkpoint, weights="ema")  # as linear.py
        spec = run["network"]

        def build() -> nn.Module:
            return TruncatedClassifier(pretrained, framework, job.layer, job.t, job.steps, classes)

        record = {
            "checkpoint": job.checkpoint,
            "run": {k: run[k] for k in ("network", "framework")},
        }
    else:
        run = job.run or {}
        spec, framework = run["network"], build_framework(run["framework"])

        def build() -> nn.Module:
            network = build_network(run["network"])
            framework = build_framework(run["framework"])
            return TruncatedClassifier(network, framework, job.layer, job.t, job.steps, classes)

        record = {"checkpoint": None, "run": run}
    data.check_spec(spec, f"{job.created_by}.network")
    sigma = framework.sigma_at_timestep(job.t, job.steps)  # validates t/steps early
    record.update(layer=job.layer, t=job.t, steps=job.steps, sigma=sigma)
    return build, record


def _data(
    job: ClassifierJob, config: ClassifierTrainingConfig, device: torch.device
) -> tuple[ClassifierData, dict[str, Any]]:
    """The job's data source and what identifies its data (for resuming) and is recorded."""
    if job.created_by == "finetune_dit":
        if job.latents is None:
            raise ConfigError("finetune_dit: latents (a latent cache directory) is required")
        data = LatentData(load_latents(job.latents), config.epochs, config.seed, device)
        return data, {"fingerprint": latent_fingerprint(job.latents), "latents": job.latents}
    if job.train is None or job.test is None:
        raise ConfigError(f"{job.created_by}: train and test splits are required")
    train, test = ImageDataset.load(job.train), ImageDataset.load(job.test)
    if list(train.classes) != list(test.classes):
        raise ConfigError(f"{job.train} and {job.test} have different classes")
    data = ImageData(train, test, config, device)
    fingerprint = [file_md5(job.train), file_md5(job.test)]
    return data, {"fingerprint": fingerprint, "train": job.train, "test": job.test}


def run_classifier_job(job: ClassifierJob) -> None:
    """Train the job's classifier in this process (one torchrun worker or the only process)."""
    config = from_mapping(ClassifierTrainingConfig, job.config, f"{job.created_by}.config")
    world = init_world("cpu" if job.device == "cpu" else None)
    held = contextlib.ExitStack()
    try:
        data, sources = _data(job, config, world.device)
        build, record = _model_and_record(job, data)
        identity = {
            **{k: v for k, v in record.items() if k != "sigma"},
            "created_by": job.created_by,
            "config": to_mapping(config),
            "data": sources["fingerprint"],
            "checkpoint_md5": file_md5(job.checkpoint) if job.checkpoint else None,
        }
        trainer = ClassifierTrainer(build, data, None, config, world, identity)
        state_dir = Path(job.state_dir)
        options = ClassifierOptions(
            state_dir=state_dir,
            metrics_path=Path(job.metrics) if job.metrics else None,
            snapshot_every_seconds=job.snapshot_every_seconds,
            snapshot_every_steps=job.snapshot_every_steps,
            eval_every=job.eval_every,
            progress=job.progress,
        )
        if world.is_main:  # one writer per job's partial state (a second one fails at once)
            held.enter_context(partial_state_lock(state_dir))
        trainer.resume(state_dir)
        if world.is_main:  # each epoch's metrics line once, also after a resume
            drop_metrics_after(options.metrics_path, trainer.state.step)
        history = trainer.run(options)
        if world.is_main:
            model = trainer.network
            result = {
                "test_accuracy": history[-1]["test_accuracy"],
                "layer": record.get("layer"),
                "layer_name": getattr(model, "layer_name", None),
                "t": record.get("t"),
                "steps": record.get("steps"),
                "sigma": record.get("sigma"),
                "epochs": config.epochs,
                "history": history,
                "checkpoint": record["checkpoint"],
                "config": to_mapping(config),
                "created_by": job.created_by,
                "parameters": count_parameters(model),
                "processes": world.size,
                **{k: v for k, v in sources.items() if k != "fingerprint"},
                **{k: record[k] for k in ("run", "network") if k in record},
            }
            write_json(job.out_json, result)
            (state_dir / PARTIAL_STATE).unlink(missing_ok=True)
            log.info("%s: test accuracy %.2f%%", job.out_json, result["test_accuracy"])
    finally:
        held.close()
        close_world(world)
