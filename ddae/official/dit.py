"""DiT-XL/2-256 (Peebles & Xie) from its original state dict → our ``dit`` (`ddae.networks.dit`,
original parameter names, strict load) under DDPM with T = 1000 linear β, on VAE latents (paper
Tables 3-4, the transfer rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ddae.networks import build_network, network_spec
from ddae.networks.dit import DiT
from ddae.official import OfficialImportError
from ddae.official.conversion import DDPM_FRAMEWORK, Converted, provenance

DIT_XL_2 = {"arch": "dit"}  # DiT.Config defaults are DiT-XL/2 at 256 px


def dit_config_from_state(state: Mapping[str, torch.Tensor], num_heads: int) -> dict[str, Any]:
    """The ``dit`` spec implied by an original DiT state dict's shapes (heads are not stored)."""
    try:
        hidden = state["pos_embed"].shape[-1]
        num_patches = state["pos_embed"].shape[1]
        proj = state["x_embedder.proj.weight"]  # (hidden, C, p, p)
        patch, in_channels = proj.shape[-1], proj.shape[1]
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        table_rows = state["y_embedder.embedding_table.weight"].shape[0]
        out = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise OfficialImportError(f"DiT state dict has no {error.args[0]!r}") from error
    return {
        "arch": "dit",
        "input_size": math.isqrt(num_patches) * patch,
        "patch_size": patch,
        "in_channels": in_channels,
        "hidden_size": hidden,
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": mlp_hidden / hidden,
        "num_classes": table_rows - 1,
        "class_dropout_prob": 0.1,
        "learn_sigma": out == 2 * in_channels,
    }


def read_dit(
    state_path: Path,
    *,
    url: str | None,
    expected: Mapping[str, Any] | None,
    network: Mapping[str, Any] | None = None,
) -> Converted:
    """Read the original DiT state dict (DiT-XL-2-256x256.pt) into our ``dit``.

    ``network`` is the expected ``dit`` spec (default DiT-XL/2); the shapes in the file must
    agree with it key by key. (``expected`` is checked when the checkpoint is written.)
    """
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("ema"), dict):
        state = state["ema"]  # DiT training checkpoints; the released file is a plain state dict
    model = build_network(dict(network or DIT_XL_2))
    assert isinstance(model, DiT)
    expected_spec = network_spec(model)
    found_spec = dit_config_from_state(state, model.config.num_heads)
    for key, value in found_spec.items():
        if key == "class_dropout_prob":
            continue
        if value != expected_spec[key]:
            raise OfficialImportError(
                f"{state_path}: DiT {key} is {value!r} in the file, the run expects "
                f"{expected_spec[key]!r}"
            )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise OfficialImportError(f"{state_path}: weights do not match dit: {error}") from error
    record = provenance("dit", [state_path], url, "ddae.official.dit.read_dit")
    return Converted(model, dict(DDPM_FRAMEWORK), record)
