"""Fine-tuning truncated DDAE encoders and the supervised baselines (paper Sec. 4.1, App. A).

A classifier job is a model spec plus a `ddae.sources.Source` (images or cached VAE latents),
trained by the one loop of `ddae.classifier_training`. The model specs (`MODELS`):

- `PretrainedEncoder` (`finetune`, Table 7): the pre-trained diffusion network (EMA weights, as
  the official linear.py) truncated after the chosen decoder block ("layer k/N", Table 9);
  clean inputs go in, the timestep input is fixed to the chosen t ("For fine-tuning, clean
  images are passed to DDAE encoders, which are truncated at the optimal layers. The timestep
  inputs are also fixed to the optimal values", Sec. 3.2); the block output is globally
  average-pooled (DiT: its tokens averaged, null class label) and fed to a linear classifier
  (no extra normalisation layer, App. A); everything is trained end to end with Adam and cosine
  decay (Table 7: 1e-3; DiT on latents, Sec. 4.2: 8e-5, batch 8 × 8 GPUs, 50 epochs, one random
  augmented latent version per image and epoch, `ddae.sources.LatentSource`).
- `ScratchEncoder` (`train_from_scratch`, Table 8, Figure 5 "Scratch"): the same truncated
  encoder, randomly initialised, Adam 5e-4, 200 epochs with 5 warm-up epochs.
- `WideResNetModel` (`train_supervised_wrn`, Table 8): WideResNet-28-10, SGD 0.1 (momentum
  0.9, weight decay 5e-4 in the official noisy_classifier_WRN.py), 200 epochs with 5 warm-up
  epochs.

Each job runs in one process or under ``torchrun`` through `ddae.launch.run_job` (by the name
of `run_classifier_job`) and writes one result JSON: test accuracy in percent, layer, t, σ,
per-epoch history, the model's record, the source's files (`ddae.result_writers` writes it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ddae.checkpoints import load_network
from ddae.classifier_training import (
    PARTIAL_STATE,
    ClassifierOptions,
    ClassifierTrainer,
    ClassifierTrainingConfig,
)
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.diffusion import Framework, build_framework, framework_config
from ddae.distributed import close_world, init_world
from ddae.downloads import file_md5
from ddae.joblog import job_device
from ddae.launch import JobExecution, run_job
from ddae.layer_choice import resolve_layer_t
from ddae.networks import build_network, count_parameters, network_config, network_spec
from ddae.result_writers import write_json
from ddae.sources import Source, open_source

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


# --- model specs: what is trained (the source says on what) ----------------------------------

Builder = Callable[[], nn.Module]


@dataclass(frozen=True)
class _TruncatedEncoder:
    """A diffusion network truncated after ``layer``, timestep input fixed to t/steps."""

    layer: int  # 1-based decoder block (Table 9 "k/N")
    t: int  # Table 9 "t/steps"
    steps: int

    def _builder(self, network: Callable[[], tuple[nn.Module, Framework]], classes: int) -> Builder:
        def build() -> nn.Module:
            return TruncatedClassifier(*network(), self.layer, self.t, self.steps, classes)

        return build

    def _layer_t(self, framework: Framework) -> dict[str, Any]:
        sigma = framework.sigma_at_timestep(self.t, self.steps)  # validates t/steps early
        return {"layer": self.layer, "t": self.t, "steps": self.steps, "sigma": sigma}


@dataclass(frozen=True)
class PretrainedEncoder(_TruncatedEncoder):
    """The checkpoint's EMA network, truncated (Table 7 fine-tuning)."""

    kind: ClassVar[str] = "pretrained"
    created_by: ClassVar[str] = "finetune"  # the name its result records
    checkpoint: str

    def prepare(self, source: Source, where: str) -> tuple[Builder, dict[str, Any]]:
        """A builder of the classifier and what the result records about the model."""
        pretrained, framework, run = load_network(self.checkpoint, weights="ema")  # linear.py
        source.check_network(run["network"], f"{where}.network")
        build = self._builder(lambda: (pretrained, framework), source.num_classes)
        record = {"checkpoint": self.checkpoint, "run": {k: run[k] for k in _RUN_KEYS}}
        return build, {**record, **self._layer_t(framework)}


@dataclass(frozen=True)
class ScratchEncoder(_TruncatedEncoder):
    """The same truncated encoder, randomly initialised (Table 8, Figure 5 "Scratch")."""

    kind: ClassVar[str] = "scratch"
    created_by: ClassVar[str] = "train_from_scratch"
    run: dict[str, Any]  # {network, framework}, every default filled in on construction

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", _scratch_run(self.run))

    def prepare(self, source: Source, where: str) -> tuple[Builder, dict[str, Any]]:
        run = self.run
        source.check_network(run["network"], f"{where}.network")

        def fresh() -> tuple[nn.Module, Framework]:
            return build_network(run["network"]), build_framework(run["framework"])

        build = self._builder(fresh, source.num_classes)
        framework = build_framework(run["framework"])
        return build, {"checkpoint": None, "run": run, **self._layer_t(framework)}


@dataclass(frozen=True)
class WideResNetModel:
    """A WideResNet (28-10 in the paper) trained from scratch (Table 8)."""

    kind: ClassVar[str] = "wide_resnet"
    created_by: ClassVar[str] = "train_supervised_wrn"
    network: dict[str, Any]  # {"arch": "wide_resnet", ...}

    def __post_init__(self) -> None:
        network = self.network
        if not isinstance(network, Mapping) or network.get("arch") != "wide_resnet":
            raise ConfigError(
                f"network.arch: the supervised baseline is 'wide_resnet', got {network!r}"
            )
        network_config(network, "network")

    def prepare(self, source: Source, where: str) -> tuple[Builder, dict[str, Any]]:
        classes = source.num_classes
        spec = dict(self.network)
        spec.setdefault("num_classes", classes)
        if spec["num_classes"] != classes:
            raise ConfigError(f"network.num_classes {spec['num_classes']} != {classes} classes")
        spec = network_spec(build_network(spec))  # defaults filled in
        return (lambda: build_network(spec)), {"network": spec, "checkpoint": None}


_RUN_KEYS = ("network", "framework")
# model kind -> spec class; a job names its model by kind (the noise-conditional head joins here)
MODELS: dict[str, type] = {m.kind: m for m in (PretrainedEncoder, ScratchEncoder, WideResNetModel)}


def model_spec(mapping: Mapping[str, Any], where: str = "model") -> Any:
    """The `MODELS` spec of ``{"kind": ..., fields}``."""
    kind = mapping.get("kind") if isinstance(mapping, Mapping) else None
    if kind not in MODELS:
        raise ConfigError(f"{where}.kind: unknown {kind!r} (choose from {sorted(MODELS)})")
    return from_mapping(MODELS[kind], {k: v for k, v in mapping.items() if k != "kind"}, where)


def _scratch_run(run: Mapping[str, Any], where: str = "run") -> dict[str, Any]:
    """Validated ``{network, framework}`` with every default filled in."""
    if not isinstance(run, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {run!r}")
    unknown = sorted(set(run) - set(_RUN_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: framework, network)")
    for key in _RUN_KEYS:
        if key not in run:
            raise ConfigError(f"{where}.{key}: required key is missing")
    network = network_config(run["network"], f"{where}.network")
    framework = framework_config(run["framework"], f"{where}.framework")
    return {
        "network": {"arch": run["network"]["arch"], **to_mapping(network)},
        "framework": {"kind": run["framework"]["kind"], **to_mapping(framework)},
    }


# --- the job: a model spec, a source, a training config -------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClassifierJob(JobExecution):
    """One classifier training: what `ddae.launch` hands every torchrun worker."""

    model: dict[str, Any]  # a `MODELS` spec: {"kind": ..., fields}
    source: dict[str, str]  # `ddae.sources.Source.files`: {train, test} or {latents}
    config: dict[str, Any]  # ClassifierTrainingConfig mapping
    out_json: str
    eval_every: int = 1  # evaluate the test split every this many epochs

    @property
    def target(self) -> str:
        return self.out_json


def train_classifier(
    model: Any,
    source: Source,
    config: Mapping[str, Any] | ClassifierTrainingConfig,
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    processes: int = 1,
    device: str = "cuda",
    **options: Any,
) -> None:
    """Train a `MODELS` spec on ``source``, in this process or under torchrun.

    ``options``: snapshot_every_seconds, snapshot_every_steps, eval_every, progress. On latents
    the config's ``hflip``/``crop_padding`` default to off and must stay off
    (`ddae.sources.LatentSource.training_config`: the versions are already augmented).
    """
    if isinstance(config, ClassifierTrainingConfig):
        config = to_mapping(config)
    mapping = source.training_config(config)
    from_mapping(ClassifierTrainingConfig, mapping, f"{model.created_by}.config")
    job = ClassifierJob(
        model={"kind": model.kind, **to_mapping(model)},
        source=dict(source.files),
        config=mapping,
        out_json=str(out_json),
        state_dir=str(state_dir),
        metrics=str(metrics_path) if metrics_path is not None else None,
        processes=processes,
        device=device,
        **options,
    )
    run_job("ddae.finetune:run_classifier_job", job)


def finetune(
    checkpoint: str | Path, source: Source, layer: int, t: int, steps: int, *args: Any, **kw: Any
) -> None:
    """Fine-tune the checkpoint's network truncated at ``layer``, timestep fixed to t (Table 7),
    on images or cached latents; further arguments as `train_classifier`."""
    model = PretrainedEncoder(layer=layer, t=t, steps=steps, checkpoint=str(checkpoint))
    train_classifier(model, source, *args, **kw)


def train_from_scratch(
    run: Mapping[str, Any], source: Source, layer: int, t: int, steps: int, *args: Any, **kw: Any
) -> None:
    """Train the same truncated encoder from a random initialisation (Table 8, Figure 5);
    further arguments as `train_classifier`."""
    train_classifier(ScratchEncoder(layer=layer, t=t, steps=steps, run=run), source, *args, **kw)


def train_supervised_wrn(network: Mapping[str, Any], source: Source, *args: Any, **kw: Any) -> None:
    """Train a WideResNet (28-10 in the paper) on the images from scratch (Table 8); further
    arguments as `train_classifier`."""
    train_classifier(WideResNetModel(network), source, *args, **kw)


def classifier_stage(
    model: Mapping[str, Any],
    inputs: Any,
    layer_t: Mapping[str, Any] | None,
    steps: int | None,
    config: Mapping[str, Any],
    out_json: str | Path,
    metrics_path: str | Path | None,
    state_dir: str | Path,
    gpus: int,
) -> None:
    """One job of the classifier rules (finetune, scratch, supervised_wrn).

    ``model``: a `MODELS` spec without what the job's inputs give: the ``checkpoint`` input of a
    model with a checkpoint, and for a truncated encoder (layer, t, steps) from the ``choice``
    input (the grid search's JSON) or else the fixed ``layer_t``
    (`ddae.layer_choice.resolve_layer_t`).
    ``inputs`` (the rule's named input) also names the source (`ddae.sources.open_source`).
    ``gpus``: torchrun workers, one per GPU; 0 trains in one CPU process.
    """
    fields = dict(model)
    kind = fields.get("kind")
    names = {f.name for f in dataclasses.fields(MODELS[kind])} if kind in MODELS else set()
    if "checkpoint" in names:
        fields["checkpoint"] = str(inputs.get("checkpoint"))
    if "layer" in names:
        layer, t, steps = resolve_layer_t(inputs.get("choice") or [], layer_t, steps)
        fields.update(layer=layer, t=t, steps=steps)
    train_classifier(
        model_spec(fields),
        open_source(inputs),
        config,
        out_json,
        metrics_path,
        state_dir,
        processes=max(gpus, 1),
        device=job_device(gpus),
    )


# --- the job, in every worker -----------------------------------------------------------------


def run_classifier_job(job: ClassifierJob) -> None:
    """Train the job's classifier in this process (one torchrun worker or the only process)."""
    model = model_spec(job.model)
    created_by = model.created_by
    config = from_mapping(ClassifierTrainingConfig, job.config, f"{created_by}.config")
    world = init_world("cpu" if job.device == "cpu" else None)
    try:
        source = open_source(job.source)
        data = source.classifier_data(config, world.device)
        build, record = model.prepare(source, created_by)
        checkpoint = record["checkpoint"]
        identity = {
            **{k: v for k, v in record.items() if k != "sigma"},
            "created_by": created_by,
            "config": to_mapping(config),
            "data": source.fingerprint(),
            "checkpoint_md5": file_md5(checkpoint) if checkpoint else None,
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
        with trainer.resumed(options):
            history = trainer.run(options)
            if world.is_main:
                network = trainer.network
                result = {
                    "test_accuracy": history[-1]["test_accuracy"],
                    "layer": record.get("layer"),
                    "layer_name": getattr(network, "layer_name", None),
                    "t": record.get("t"),
                    "steps": record.get("steps"),
                    "sigma": record.get("sigma"),
                    "epochs": config.epochs,
                    "history": history,
                    "checkpoint": checkpoint,
                    "config": to_mapping(config),
                    "created_by": created_by,
                    "parameters": count_parameters(network),
                    "processes": world.size,
                    **source.record(),
                    **{k: record[k] for k in ("run", "network") if k in record},
                }
                write_json(job.out_json, result)
                (state_dir / PARTIAL_STATE).unlink(missing_ok=True)
                log.info("%s: test accuracy %.2f%%", job.out_json, result["test_accuracy"])
    finally:
        close_world(world)
