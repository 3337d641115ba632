"""Device-side batching for the training loops: the order of the items in an epoch, how an epoch
splits into optimizer steps (`EpochBatches`, the authors' data loader), the light augmentations
of linear probing and fine-tuning, and the models' pixel range.

Augmentations for linear probing and fine-tuning (paper Appendix A, Tables 6–8):
``RandomHorizontalFlip()`` and ``RandomCrop(32, 4)`` (CIFAR-10) or ``RandomCrop(64, 4)``
(Tiny-ImageNet). `augment_batch` implements exactly these torchvision semantics, vectorised on
the batch's device with an explicit `torch.Generator`. EDM's pre-training augmentation pipeline
lives in `ddae.augment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the items in `epoch`: a CPU LongTensor determined by (seed, epoch) alone.

    The two integers are mixed by numpy's SeedSequence (a hash, so nearby seeds and epochs give
    unrelated streams) into the seed of a fresh torch generator.
    """
    if num_items < 0 or seed < 0 or epoch < 0:
        raise ValueError(f"need non-negative num_items, seed, epoch; got {num_items, seed, epoch}")
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
    generator = torch.Generator().manual_seed(mixed)
    return torch.randperm(num_items, generator=generator)


@dataclass(frozen=True)
class EpochBatches:
    """The optimizer steps of one epoch of ``num_items`` at global ``batch_size`` over
    ``world_size`` processes, as the authors' loader cuts them.

    FutureXiang/ddae ``utils.py`` ``DataLoaderDDP``: ``DistributedSampler(dataset, shuffle)`` and
    ``DataLoader(dataset, batch_size=<per GPU>, sampler=sampler)``, ``drop_last`` left False in
    both; it is the only loader of their code (train.py, linear.py, noisy_classifier_DDAE.py,
    noisy_classifier_WRN.py, contrastive.py, DiT/linear.py), so no training of theirs drops a
    partial batch. The sampler pads the epoch's order to a multiple of the world size W with its
    first items (``order[p mod N]`` at position p) and deals rank r the positions r, r + W, … —
    ceil(N / W) each; each rank's loader cuts its share into batches of b = B / W, the last one
    partial. Step k thus trains on positions [k·B, k·B + W·b_k) of the padded order, b_k =
    min(b, ceil(N / W) − k·b), in ceil(ceil(N / W) / b) steps: CIFAR-10 at 4 × 128 is 98 steps,
    the last 4 × 84 (50,000 = 97 · 512 + 336).

    Here every rank draws the whole global batch (`items`) and keeps every W-th of its items from
    its rank on (`mine`): in every step each rank trains on the very items its sampler would deal
    it from the same order. One process with the same global batch trains on the same items, so
    N processes follow one whenever N divides the item count (CIFAR-10 and Tiny-ImageNet on the
    authors' 4 GPUs); otherwise the padding differs with N.
    """

    num_items: int
    batch_size: int  # global: summed over the processes
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.num_items < 1 or self.world_size < 1 or self.batch_size < 1:
            raise ValueError(f"need positive num_items, batch_size, world_size; got {self}")
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by {self.world_size}")

    @property
    def per_rank(self) -> int:
        """Items each rank's sampler deals it per epoch (DistributedSampler's num_samples)."""
        return math.ceil(self.num_items / self.world_size)

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch, the last one partial unless the batch divides the share."""
        return math.ceil(self.per_rank / (self.batch_size // self.world_size))

    def counted_alike(self, step: int, epoch: int, epoch_step: int) -> bool:
        """Whether a saved state's global ``step`` at (``epoch``, ``epoch_step``) counts epochs
        of these `steps` (a state saved under another epoch length cannot be continued)."""
        return step == epoch * self.steps + epoch_step

    def rank_size(self, step: int) -> int:
        """Items of 0-based ``step`` on each rank: the per-GPU batch, less in the last step."""
        if not 0 <= step < self.steps:
            raise ValueError(f"step {step} is outside the epoch's {self.steps} steps")
        local = self.batch_size // self.world_size
        return min(local, self.per_rank - step * local)

    def size(self, step: int) -> int:
        """Items of ``step`` summed over the ranks."""
        return self.world_size * self.rank_size(step)

    def items(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """The global batch of ``step``: its positions in the epoch's (padded) ``order``."""
        start = step * self.batch_size
        stop = start + self.size(step)
        if stop <= self.num_items:
            return order[start:stop]
        return order[torch.arange(start, stop, device=order.device) % self.num_items]

    def mine(self, rank: int) -> slice:
        """``rank``'s part of any step's global batch: DistributedSampler's round robin."""
        return slice(rank, None, self.world_size)


@dataclass
class CropFlip:
    """Per-image parameters of `augment_batch`: flip flags (N,) and (top, left) offsets (N, 2)."""

    flips: torch.Tensor
    offsets: torch.Tensor


def sample_crop_flip(
    num_images: int, *, hflip: bool, crop_padding: int, generator: torch.Generator
) -> CropFlip:
    """Draw flips (p = 0.5) then crop offsets uniform in [0, 2·padding], on generator's device.

    Matches torchvision's RandomHorizontalFlip() and RandomCrop(size, padding): the window's
    top-left corner in the zero-padded image is ``randint(0, 2·padding + 1)`` in each axis.
    """
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be non-negative, got {crop_padding}")
    device = generator.device
    flips = torch.zeros(num_images, dtype=torch.bool, device=device)
    if hflip:
        flips = torch.rand(num_images, generator=generator, device=device) < 0.5
    offsets = torch.full((num_images, 2), crop_padding, dtype=torch.int64, device=device)
    if crop_padding:
        size = (num_images, 2)
        offsets = torch.randint(0, 2 * crop_padding + 1, size, generator=generator, device=device)
    return CropFlip(flips, offsets)


def apply_crop_flip(images: torch.Tensor, params: CropFlip, crop_padding: int) -> torch.Tensor:
    """Crop each zero-padded image at its offset, then mirror it if flagged, in one gather."""
    n, c, h, w = images.shape
    padded = F.pad(images, (crop_padding,) * 4) if crop_padding else images
    device = images.device
    columns = torch.arange(w, device=device)
    columns = torch.where(params.flips[:, None], w - 1 - columns, columns)  # (N, W)
    columns = columns + params.offsets[:, 1:2]
    rows = params.offsets[:, 0:1] + torch.arange(h, device=device)  # (N, H)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]


def augment_batch(
    images_uint8: torch.Tensor, *, hflip: bool, crop_padding: int, generator: torch.Generator
) -> torch.Tensor:
    """Random horizontal flip and pad-and-crop of a uint8 batch, vectorised on its device.

    The generator must live on the images' device; equal generator states give identical
    outputs.
    """
    params = sample_crop_flip(
        images_uint8.shape[0], hflip=hflip, crop_padding=crop_padding, generator=generator
    )
    return apply_crop_flip(images_uint8, params, crop_padding)


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] as x / 127.5 − 1 (the diffusion models' data range)."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0
