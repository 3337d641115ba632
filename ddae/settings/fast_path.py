"""The three CUDA fast-path keys of every stage that runs a frozen network (not in the paper;
issue 13): ``bf16``, ``tf32``, ``channels_last``. What they do lives in `ddae.fast_path`; this
module holds the config keys alone, importing no torch, so planning can validate them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ddae.fast_path import FastPath


@dataclass(frozen=True, kw_only=True)
class FastPathSwitches:
    """The three config keys of a stage that runs a frozen network (`ddae.fast_path`)."""

    bf16: bool = True  # bf16 autocast on CUDA (the authors: fp16 autocast, --use_amp)
    tf32: bool = True  # TF32 matrix products and cuDNN convolutions on CUDA
    channels_last: bool = True  # NHWC activations and weights on CUDA

    def fast_path(self, device: torch.device | str) -> FastPath:
        """The switches of this config that act on `device` (CUDA only)."""
        from ddae.fast_path import FastPath  # torch: only where a network runs

        return FastPath.for_device(
            device, bf16=self.bf16, tf32=self.tf32, channels_last=self.channels_last
        )
