"""The CUDA fast path of every stage that runs a frozen network (not in the paper; issue 13).

FID sampling (`ddae.sampling`, `ddae.fid`), feature caches and the per-t grid
(`ddae.features`, `ddae.grid_timesteps`), the linear probe with the network in the loop
(`ddae.probing`) and DiT's VAE latents (`ddae.latents`) run on CUDA by default with

* bf16 autocast (the authors ran their evaluations under fp16 autocast, FutureXiang/ddae
  ``--use_amp``; bf16 keeps float32's range, so no loss scaling or overflow checks),
* TF32 matrix products and cuDNN convolutions (the float32 parts left by autocast),
* channels_last (NHWC) activations and weights, which tensor-core convolutions prefer.

Each stage's config carries the three switches (`ddae.settings.fast_path.FastPathSwitches`: keys
``bf16``, ``tf32``, ``channels_last``, all default true). They act on CUDA only: on any other device
the network runs in float32 exactly as before, bitwise. Every result records ``ran_with``
(`FastPath.record`), the switches that actually acted, so a CPU result never reads as bf16. The gap
to float32 is bounded on CPU by tests/test_fast_path.py and tests/test_sampling.py (forcing the
switches on, as CPU autocast supports bf16) and measured on a GPU by benchmarks/gpu_session.py.

Training has its own switches (`ddae.settings.pretraining.TrainingConfig`,
`ddae.settings.classifiers.ClassifierTrainingConfig`), which also choose fused optimisers and
`torch.compile`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

# The TF32 switches are process-wide, and FID scores one batch on a worker thread while the
# next samples (`ddae.fid.ScoringQueue`): every block that reads or changes them holds this lock,
# so a block sees either its own switches or the process's, never another thread's. Kernels are
# launched asynchronously, so the lock is held for the launches, not for the GPU work.
_SWITCHES = threading.RLock()


@contextlib.contextmanager
def tf32_matmul(enabled: bool) -> Iterator[None]:
    """Allow TF32 in CUDA matrix products and cuDNN convolutions inside the block only; with
    ``enabled=False`` the block runs with the process's own settings, which no other thread can
    change meanwhile (see `_SWITCHES`)."""
    with _SWITCHES:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        if enabled:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class FastPath:
    """The switches in effect for one job; all off is plain float32."""

    bf16: bool = False
    tf32: bool = False
    channels_last: bool = False

    @classmethod
    def for_device(
        cls,
        device: torch.device | str,
        *,
        bf16: bool = True,
        tf32: bool = True,
        channels_last: bool = True,
    ) -> FastPath:
        """The requested switches that act on `device`: all of them on CUDA, none elsewhere."""
        cuda = torch.device(device).type == "cuda"
        return cls(bf16=bf16 and cuda, tf32=tf32 and cuda, channels_last=channels_last and cuda)

    def prepare(self, net: nn.Module) -> nn.Module:
        """`net` with channels_last weights if switched on (in place: layout, not values)."""
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def activations(self, x: Tensor) -> Tensor:
        """An image batch (B, C, H, W) in the memory format the network expects."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def running(self, device_type: str) -> Iterator[None]:
        """Around one forward pass: bf16 autocast and TF32 as switched (restored afterwards)."""
        with (
            tf32_matmul(self.tf32),
            torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16),
        ):
            yield

    def record(self, device: torch.device | str) -> dict[str, Any]:
        """The ``ran_with`` entry of a result: the device type and the switches that acted."""
        return {
            "device": torch.device(device).type,
            "bf16": self.bf16,
            "tf32": self.tf32,
            "channels_last": self.channels_last,
        }


FLOAT32 = FastPath()  # every switch off: plain float32, the default of the library functions
