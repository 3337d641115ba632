"""Names that tables and figures give runs and networks (paper Tables 2-8, Figures 5-6).

A miniature run stands in for one of the paper's models (``tables.models`` in the config maps
the paper's key, e.g. ``cifar10_edm``, to the run that plays it), but its numbers come from its
own network on its own dataset. So every legend, title and table cell names the run as the
config names it and the network by what it is (its config); the paper's labels (``cifar10_edm``,
"WideResNet-28-10") appear only beside the paper's own values, and a paper value is drawn only
on an axis of the paper's dataset. Pure Python, no torch: the workflow calls these while it
plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# WideResNet.Config's defaults (ddae/networks/wide_resnet.py): WRN-28-10, the paper's Table 8.
_WRN_DEFAULT_DEPTH, _WRN_DEFAULT_WIDTH = 28, 10


def network_label(network: Mapping[str, Any]) -> str:
    """What a network is, from its config: ``WRN-<depth>-<widen factor>`` for the WideResNets
    (a noise-conditional one says so), the architecture's name otherwise."""
    arch = network.get("arch", "network")
    if arch in ("wide_resnet", "noisy_wide_resnet"):
        depth = network.get("depth", _WRN_DEFAULT_DEPTH)
        width = network.get("widen_factor", _WRN_DEFAULT_WIDTH)
        name = f"WRN-{depth}-{width}"
        return f"noise-conditional {name}" if arch == "noisy_wide_resnet" else name
    return str(arch)


def paper_dataset(paper_key: str) -> str:
    """The dataset of one of the paper's models: ``cifar10_edm`` -> ``cifar10``,
    ``tiny_imagenet_wrn`` -> ``tiny_imagenet``."""
    return paper_key.rsplit("_", 1)[0]


def on_paper_dataset(dataset: str, paper_key: str | None, stand_in: bool) -> bool:
    """Whether a run on ``dataset`` can stand beside the paper's value of ``paper_key``: the
    same dataset, and not the paper-shape miniature's synthetic stand-in of it."""
    return paper_key is not None and not stand_in and paper_dataset(paper_key) == dataset
