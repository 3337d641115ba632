"""Check a whole config.yaml before any job runs: every value the jobs will read is validated by
the dataclass that reads it, so a bad value stops ``snakemake -n`` naming its key instead of
failing hours later at job start.

The checks are the config dataclasses' own (`ddae.configs.from_mapping` types and finiteness,
each ``__post_init__``), all in `ddae.settings`, which imports no torch: networks
(`ddae.settings.networks`: attention resolutions among the network's resolutions, DiT heads
dividing the width, WRN depth 6n + 4), frameworks (`ddae.settings.frameworks`: β_min < β_max,
σ_min < σ_max), pre-training (`ddae.settings.pretraining.normalize_run`: Adam betas, learning
rate, augment_p needing augment_dim) and every evaluation stage (probes, fine-tuning, FID
sampling, feature caches, alignment/uniformity, noisy heads, latents). The same checks run
when the library is used directly, since each job builds the same dataclasses; one check is
added here: the classifiers' Adam betas within [0, 1), which torch.optim.Adam would refuse at
job start without naming the key. Called from the Snakefile right after the schema validation;
errors are `ConfigError` naming the key path (e.g. ``pretraining.cifar10_ddpm.training.lr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ddae.configs import ConfigError, Key, dotted_key, from_mapping
from ddae.pipeline.stages import stage_configs
from ddae.settings.classifiers import ClassifierTrainingConfig
from ddae.settings.frameworks import framework_config
from ddae.settings.networks import network_config
from ddae.settings.pretraining import normalize_run

# evaluation stage -> the dataclass its job builds from that mapping (the stage registry)
STAGE_CONFIGS: dict[str, type] = stage_configs()


def _integer(value: Any, where: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {value}")


def _classifier_training(spec: Any, key: tuple[Key, ...]) -> ClassifierTrainingConfig:
    """A fine-tuning, scratch or WRN training block, with Adam's betas in [0, 1) as
    torch.optim.Adam requires (it would fail at job start without naming the key)."""
    config = from_mapping(ClassifierTrainingConfig, spec, dotted_key(key))
    if not all(0.0 <= beta < 1.0 for beta in config.adam_betas):
        where = (*key, "adam_betas")
        raise ConfigError(
            f"{dotted_key(where)}: {list(config.adam_betas)} must lie in [0, 1)", key=where
        )
    return config


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def check_pretraining_run(name: str, run: Mapping[str, Any]) -> None:
    """One ``pretraining.<name>`` entry: epochs, run slice and evaluation stages."""
    where = f"pretraining.{name}"
    run = _mapping(run, where)
    epochs = run.get("epochs", [])
    if not isinstance(epochs, list):
        raise ConfigError(f"{where}.epochs: expected a list of integers, got {epochs!r}")
    for i, epoch in enumerate(epochs):
        # epoch 0: the initial weights, untrained (the findings' random-init reference)
        _integer(epoch, f"{where}.epochs[{i}]", minimum=0)
    for key in ("gpus", "segment_epochs"):
        if key in run:
            _integer(run[key], f"{where}.{key}", minimum=0 if key == "gpus" else 1)
    normalize_run({k: run[k] for k in ("network", "framework", "training") if k in run}, where)
    evaluation = _mapping(run.get("evaluation") or {}, f"{where}.evaluation")
    for key in ("steps", "gpus", "training_gpus"):
        if key in evaluation:
            _integer(
                evaluation[key], f"{where}.evaluation.{key}", minimum=0 if key != "steps" else 1
            )
    layer_t = evaluation.get("layer_t")
    if isinstance(layer_t, Mapping):
        for key in ("layer", "t"):
            _integer(layer_t.get(key), f"{where}.evaluation.layer_t.{key}", minimum=1)
    for stage, cls in STAGE_CONFIGS.items():
        if stage in evaluation and cls is ClassifierTrainingConfig:
            _classifier_training(evaluation[stage], ("pretraining", name, "evaluation", stage))
        elif stage in evaluation:
            from_mapping(cls, evaluation[stage], f"{where}.evaluation.{stage}")


def check_supervised(dataset: str, spec: Mapping[str, Any]) -> None:
    """One ``supervised.<dataset>`` baseline (Table 8 WRN, Figure 6 noisy WRN)."""
    where = f"supervised.{dataset}"
    spec = _mapping(spec, where)
    for part in (spec, *([spec["noisy"]] if "noisy" in spec else [])):
        key = ("supervised", dataset) if part is spec else ("supervised", dataset, "noisy")
        prefix = dotted_key(key)
        if "network" in part:
            network_config(part["network"], f"{prefix}.network")
        if "training" in part:
            _classifier_training(part["training"], (*key, "training"))
        if "gpus" in part:
            _integer(part["gpus"], f"{prefix}.gpus")
    for kind in ("vp", "ve"):
        if kind in spec.get("noisy", {}):
            framework_config(spec["noisy"][kind], f"{where}.noisy.{kind}")


def check_config(config: Mapping[str, Any]) -> None:
    """Validate every value of a pipeline config that a job would read; raise `ConfigError`."""
    config = _mapping(config, "config")
    for name, run in (config.get("pretraining") or {}).items():
        check_pretraining_run(name, run)
    for dataset, spec in (config.get("supervised") or {}).items():
        check_supervised(dataset, spec)
    fid = config.get("fid") or {}
    for key in ("batch_size", "gpus"):
        if key in fid:
            _integer(fid[key], f"fid.{key}", minimum=1 if key == "batch_size" else 0)
