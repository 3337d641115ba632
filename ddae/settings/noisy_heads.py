"""The noise-conditional MLP head's config keys (paper Sec. 4.1.3, Eq. 5, Figure 6; trained by
`ddae.noise_conditional.train_noisy_head`). Imports no torch: `training_config` gives the
head's training settings as `ddae.classifier_training` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ddae.settings.classifiers import ClassifierTrainingConfig


@dataclass(frozen=True)
class NoisyHeadConfig:
    """Training of the noise-conditional MLP head (paper Sec. 4.1.3; official settings)."""

    # Linear-probe epochs of Table 6: CIFAR-10 DDPM 10 / EDM 15; Tiny-ImageNet DDPM 20 / EDM 30.
    epochs: int = 10
    lr: float = 1e-3  # Table 6: Adam 1e-3 per 128 images (official: lr × GPUs)
    # 0: lr as given. N > 0: lr · batch_size / N (official: 1e-3 × 4 GPUs at 128 each = 4e-3).
    lr_reference_batch: int = 128
    batch_size: int = 512  # global batch: 128 per GPU × 4 GPUs (Table 6)
    hflip: bool = True  # Table 6: RandomHorizontalFlip()
    crop_padding: int = 4  # Table 6: RandomCrop(32, 4) / RandomCrop(64, 4); 0 disables
    # DDPM test levels: arange(0, T, T // test_levels) + 1 (official: 20 → 1, 51, …, 951).
    test_levels: int = 20
    eval_batch_size: int = 500  # images per test forward pass (does not change results)
    weights: Literal["ema", "model"] = "ema"  # the EMA network, as every DDAE evaluation
    seed: int = 0  # head initialisation, data order, augmentation, t and noise draws
    bf16: bool = True  # bf16 autocast of the frozen network on CUDA (official: --use_amp)
    # Deviation, not in the paper (the official head sees the raw pooled features): standardise
    # them per noise level, (f - mean_t) / sqrt(var_t + 1e-5), with the statistics of the first
    # ``standardize_images`` clean training images noised at the level (EDM: every level; DDPM:
    # the test levels, each training t taking the nearest). Why: a briefly trained tiny network's
    # features move between noise levels by far more than they vary between images (the smoke
    # run's digits EDM network: 80x the within-level spread), and on the raw features the head
    # stayed at the ln 10 loss of chance (10 %) at any lr tried; the linear probes' counterpart
    # is ProbeConfig.standardize. Off by default: the paper's head is unchanged.
    standardize: bool = False
    standardize_images: int = 512  # clean training images behind each level's statistics

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be positive")
        if self.lr <= 0 or self.lr_reference_batch < 0:
            raise ValueError("lr must be positive and lr_reference_batch >= 0")
        if self.crop_padding < 0 or self.test_levels < 1 or self.seed < 0:
            raise ValueError("need crop_padding >= 0, test_levels >= 1, seed >= 0")
        if self.standardize_images < 2:
            raise ValueError(f"standardize_images must be >= 2, got {self.standardize_images}")

    def training_config(self) -> ClassifierTrainingConfig:
        """The head's training as `ClassifierTrainer` runs it: Adam (official: default betas, no
        weight decay) at lr · batch_size / lr_reference_batch (`ddae.learning_rate`), cosine per
        epoch without warm-up, plain cross-entropy; the head in fp32 (NCHW inputs)."""
        return ClassifierTrainingConfig(
            epochs=self.epochs,
            optimizer="adam",
            lr=self.lr,
            lr_reference_batch=self.lr_reference_batch,
            batch_size=self.batch_size,
            hflip=self.hflip,
            crop_padding=self.crop_padding,
            seed=self.seed,
            bf16=self.bf16,
            channels_last=False,
        )
