"""Pre-training's config keys (paper Appendix A, Table 5): `TrainingConfig` and `normalize_run`,
the one spelling of a run ``{network, framework, training}`` that checkpoints store and resumption
compares (`ddae.training`). Imports no torch: the network and framework keys are checked by
`ddae.settings.networks` and `ddae.settings.frameworks`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.learning_rate import peak_lr
from ddae.settings.frameworks import framework_config
from ddae.settings.networks import network_config


@dataclass(frozen=True)
class TrainingConfig:
    """Pre-training of one run (Appendix A, Table 5; the DDAE code's train.py and configs)."""

    batch_size: int = 128  # global batch, summed over all processes
    lr: float = 1e-4  # Adam lr at lr_reference_batch images (ddae.learning_rate)
    lr_reference_batch: int = 0  # N > 0: lr · batch_size / N; 0: lr as given
    warmup_epochs: int = 0  # lr · min((epoch + 1) / warmup_epochs, 1), as the DDAE code
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.9999  # β (0.9999 DDPM, 0.9993 EDM in the DDAE code)
    ema_warmup_power: float = 0.0  # 2/3 = ema_pytorch's warm-up (DDAE code); 0 = off
    ema_rampup_ratio: float = 0.0  # EDM's half-life ramp: ≤ ratio × steps so far; 0 = off
    hflip: bool = True  # random horizontal flip of the training images
    crop_padding: int = 0  # pad-and-random-crop; 0 disables
    augment_p: float = 0.0  # EDM augmentation probability (0.12 CIFAR-10); needs augment_dim 9
    seed: int = 0
    bf16: bool = True  # bf16 autocast on CUDA (CPU always trains in fp32)
    channels_last: bool = True  # NHWC activations on CUDA
    compile: bool = False  # torch.compile the network on CUDA

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.augment_p <= 1.0:
            raise ValueError(f"augment_p must be in [0, 1], got {self.augment_p}")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas needs two values, got {list(self.adam_betas)}")
        if not all(0.0 <= beta < 1.0 for beta in self.adam_betas):
            raise ValueError(f"adam_betas must lie in [0, 1), got {list(self.adam_betas)}")
        if self.adam_eps <= 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps}")
        for name in ("warmup_epochs", "grad_clip", "ema_warmup_power", "ema_rampup_ratio"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must not be negative, got {self.crop_padding}")


def normalize_run(run: Mapping[str, Any], where: str = "run") -> dict[str, Any]:
    """Validate a run ``{network, framework, training}`` and fill every default.

    The result is what checkpoints store and what resumption compares, so equal settings spelt
    differently (1e-4 vs 0.0001, a default left out) count as the same run.
    """
    if not isinstance(run, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {run!r}")
    unknown = sorted(set(run) - {"network", "framework", "training"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (allowed: framework, network, training)"
        )
    for key in ("network", "framework"):
        if key not in run:
            raise ConfigError(f"{where}.{key}: required key is missing")
    network = network_config(run["network"], f"{where}.network")
    framework = framework_config(run["framework"], f"{where}.framework")
    training = from_mapping(TrainingConfig, run.get("training", {}), f"{where}.training")
    if training.augment_p > 0 and getattr(network, "augment_dim", 0) == 0:
        raise ConfigError(
            f"{where}.training.augment_p: EDM augmentation needs network augment_dim > 0"
        )
    # the lr as one number (ddae.learning_rate): lr 1e-4 at lr_reference_batch 128 with batch
    # 512 is the run of lr 4e-4 (and of checkpoints written before the key existed)
    spelled = to_mapping(training)
    reference = spelled.pop("lr_reference_batch")
    spelled["lr"] = peak_lr(training.lr, training.batch_size, reference)
    return {
        "network": {"arch": run["network"]["arch"], **to_mapping(network)},
        "framework": {"kind": run["framework"]["kind"], **to_mapping(framework)},
        "training": spelled,
    }
