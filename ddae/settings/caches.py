"""The feature and latent caches' config keys (paper Sec. 3.2, Appendix A-B, Tables 6 and 9
"@256"): `FeatureCacheConfig` (`ddae.features.cache_features`) and `LatentCacheConfig`
(`ddae.latents.cache_latents`, DiT's SD-VAE latents). Imports no torch, so the Snakefile
validates them while it plans."""

from __future__ import annotations

from dataclasses import dataclass

from ddae.settings.fast_path import FastPathSwitches


@dataclass(frozen=True)
class FeatureCacheConfig(FastPathSwitches):
    """How `cache_features` extracts features (paper Sec. 3.2, Appendix B, Table 6)."""

    # K augmented views of the training split. The official DiT protocol caches 10 copies
    # (DiT/vae_preprocessing.py --num_copies 10); the CNN probes of linear.py re-augment every
    # epoch, i.e. one view per probing epoch (10 for Appendix B's grid).
    views: int = 10
    hflip: bool = True  # Table 6: RandomHorizontalFlip() (official linear.py)
    crop_padding: int = 4  # Table 6: RandomCrop(32, 4) / RandomCrop(64, 4); 0 disables
    batch_size: int = 256  # images per forward pass (results do not depend on it)
    seed: int = 0  # seeds every item's augmentation and noise, see module docstring
    # bf16, tf32, channels_last (FastPathSwitches): the CUDA fast path, `ddae.fast_path`

    def __post_init__(self) -> None:
        if self.views < 1 or self.batch_size < 1 or self.crop_padding < 0 or self.seed < 0:
            raise ValueError("need views >= 1, batch_size >= 1, crop_padding >= 0, seed >= 0")


@dataclass(frozen=True)
class LatentCacheConfig(FastPathSwitches):
    """How `cache_latents` encodes a dataset (paper Appendix A, Table 9 "@256")."""

    views: int = 10  # App. A: "We encode 10 versions of the training set with augmentations"
    image_size: int = 256  # Table 9: CIFAR-10@256, Tiny-ImageNet@256 (DiT-XL/2-256)
    hflip: bool = True  # RandomHorizontalFlip() before resizing (official get_dataset flip=True)
    crop_padding: int = 4  # RandomCrop(res, 4) at the native resolution, then resize
    scale: float = 0.18215  # SD latent scaling factor (official vae_preprocessing.py)
    batch_size: int = 64  # images per VAE pass (results do not depend on it)
    seed: int = 0  # seeds every image's augmentation and posterior sample
    # bf16, tf32, channels_last (FastPathSwitches): the VAE's CUDA fast path, `ddae.fast_path`
    # (official DiT/vae_preprocessing.py: fp16 autocast with --use_amp)

    def __post_init__(self) -> None:
        if self.views < 1 or self.batch_size < 1 or self.crop_padding < 0 or self.seed < 0:
            raise ValueError("need views >= 1, batch_size >= 1, crop_padding >= 0, seed >= 0")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size}")
