"""The alignment/uniformity measurement's config keys (paper Sec. 3.3, Eq. 3-4, Figure 3;
measured by `ddae.alignment.align_uniform`). Imports no torch, so the Snakefile validates
them while it plans."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlignUniformConfig:
    """Settings of one alignment/uniformity measurement (paper Sec. 3.3, Figure 3)."""

    # Training images measured (a seeded random subset; 0 = the whole training set). The paper
    # evaluates "on the CIFAR-10 training set" without saying how many images; 10,000 keeps the
    # uniformity's 5·10^7 image pairs cheap while its estimate is stable to ~1e-3.
    images: int = 10000
    batch_size: int = 256  # images per forward pass (does not change the result)
    seed: int = 0  # chooses the image subset and both noise draws (Eq. 3: ε1, ε2)

    def __post_init__(self) -> None:
        if self.images < 0:
            raise ValueError(f"images must be >= 0 (0 = all), got {self.images}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
