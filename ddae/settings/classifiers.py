"""The classifiers' training keys (paper Appendix A, Tables 7 and 8): fine-tuning a truncated
DDAE (`ddae.finetune`), training its encoder from scratch and the supervised WideResNet
baselines, all run by `ddae.classifier_training.ClassifierTrainer`. Imports no torch, so the
Snakefile validates these config.yaml sections while it plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ClassifierTrainingConfig:
    """Settings of one classifier training (paper Appendix A, Tables 7 and 8)."""

    # Table 7 fine-tuning: CIFAR-10 DDPM 30 / EDM 50, Tiny-ImageNet DDPM 80 / EDM 100;
    # Table 8 scratch encoders and WideResNet-28-10: 200.
    epochs: int
    # Table 7: Adam (DDPM, EDM); Table 8: Adam (DDAE encoder), SGD (WideResNet).
    optimizer: Literal["adam", "sgd"] = "adam"
    # Table 7: 1e-3 (DDPM, EDM); Table 8: 5e-4 (DDAE encoder), 0.1 (WideResNet).
    lr: float = 1e-3
    # `ddae.learning_rate`: N > 0: lr · batch_size / N; 0: lr as given. The official linear.py
    # multiplies its lr by the number of GPUs at 128 images each (N = 128);
    # noisy_classifier_WRN.py does not scale.
    lr_reference_batch: int = 0
    # Adam "with default momentum & weight decay" (Tables 6–7): betas (0.9, 0.999), decay 0.
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    # SGD momentum and weight decay of the official WRN code (noisy_classifier_WRN.py):
    # momentum 0.9, weight_decay 5e-4, no Nesterov.
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 512  # global batch: 128 per GPU × 4 GPUs (Tables 7 and 8)
    warmup_epochs: int = 0  # Table 8: 5 (linear per epoch, noisy_classifier_WRN.py); Table 7: 0
    hflip: bool = True  # RandomHorizontalFlip() (Tables 6–8)
    crop_padding: int = 4  # RandomCrop(32, 4) / RandomCrop(64, 4) (Tables 6–8)
    label_smoothing: float = 0.0  # the official code uses plain CrossEntropyLoss
    seed: int = 0
    bf16: bool = True  # bf16 autocast on CUDA (CPU always trains in fp32)
    channels_last: bool = True  # NHWC activations on CUDA

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in 0..epochs, got {self.warmup_epochs}")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas needs two values, got {list(self.adam_betas)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
