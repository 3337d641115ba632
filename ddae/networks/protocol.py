"""What every diffusion network of `ddae` offers the stages that read its representations
(paper Sec. 3.2: features of one decoder block at one noise level; Sec. 4 and Table 9: the
"layer k/N" numbering; Sec. 4.1 and 4.2: fine-tuning "truncates DDAE at the best representation
layer").

A network registered in `ddae.networks.NETWORKS` with kind ``"diffusion"`` is an ``nn.Module``
that satisfies `DiffusionNetwork`; ``tests/test_network_registry.py`` checks this for every
registered network (and for a toy network added through the registry):

* ``forward(x, noise_labels, augment_labels=None)`` returns the framework's raw network output
  F(x) of ``x``'s shape (`ddae.diffusion` turns it into a denoiser D(x, σ));
* ``decoder_blocks()`` lists ``(name, module)`` pairs in forward order, lowest resolution first;
  ``name`` is the module's path (``network.get_submodule(name)``) and a forward hook on the
  module receives the block's output, (B, C, H, W) or (B, N, C) tokens. "Layer k" is
  ``decoder_blocks()[k - 1]`` everywhere (features, grid search, truncation, tables);
* ``num_decoder_blocks`` equals ``len(decoder_blocks())`` without building the list;
* ``truncated(k)`` is a `TruncatedNetwork` that shares the network's modules (no copy) and holds
  exactly the modules needed up to block k; its output is block k's output as a feature map
  (B, C, h, w) and, pooled over space, equals the pooled output of a hook on block k;
* ``config`` is the frozen config dataclass it was built from (`ddae.networks.network_spec`).

This package's networks, classifiers included, derive from `ConfiguredNetwork`, which keeps
that config (the defaults when none is given).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn


class ConfiguredNetwork(nn.Module):
    """A network of `ddae.networks.NETWORKS` built from its frozen config dataclass.

    A subclass names the dataclass ``Config`` (torch-free, in `ddae.settings.networks`, so that
    planning validates it) and calls ``super().__init__(config)`` first; ``config`` None means
    ``Config()``, the defaults (the paper's network). The config is kept as ``self.config``,
    which `ddae.networks.network_spec` turns back into the network's spec.
    """

    Config: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()


@runtime_checkable
class TruncatedNetwork(Protocol):
    """A diffusion network cut after decoder block ``layer``: ``(x, noise_labels) -> (B, C, h, w)``.

    ``layer_name`` is ``decoder_blocks()[layer - 1][0]`` of the full network and ``out_channels``
    is C, the width of a linear head on the spatially pooled output (`ddae.finetune`).
    """

    layer: int
    layer_name: str
    out_channels: int

    def __call__(
        self, x: torch.Tensor, noise_labels: torch.Tensor, augment_labels: torch.Tensor | None = ...
    ) -> torch.Tensor: ...

    def parameters(self, recurse: bool = ...) -> Any: ...


@runtime_checkable
class DiffusionNetwork(Protocol):
    """A denoising network whose decoder blocks are DDAE's representation layers."""

    config: Any

    def __call__(
        self, x: torch.Tensor, noise_labels: torch.Tensor, augment_labels: torch.Tensor | None = ...
    ) -> torch.Tensor: ...

    def decoder_blocks(self) -> list[tuple[str, nn.Module]]: ...

    @property
    def num_decoder_blocks(self) -> int: ...

    def truncated(self, layer: int) -> TruncatedNetwork: ...


def check_layer(layer: int, count: int) -> int:
    """``layer`` if it is a 1-based decoder-block index of a network with ``count`` blocks."""
    if not 1 <= layer <= count:
        raise ValueError(f"layer {layer} is outside 1..{count} (decoder blocks)")
    return layer


def no_augment_labels(augment_labels: torch.Tensor | None, network: str) -> None:
    """Networks without EDM's augmentation input refuse augmentation labels (not ignore them)."""
    if augment_labels is not None:
        raise ValueError(f"{network} has no augmentation input; augment_labels must be None")
