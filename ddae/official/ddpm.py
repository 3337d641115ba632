"""DDPM (Ho et al.) from its diffusers folder google/ddpm-cifar10-32 → our ``ddpm_unet`` under
the DDPM framework (paper Appendix A: the CIFAR-10 DDPM checkpoint of Tables 2-5).

The folder's config must equal our `DDPMUNet` spec key by key (else the differing key is
named); a ``scheduler_config.json`` must describe T = 1000 linear β 1e-4..0.02.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddae.networks import build_network
from ddae.networks.ddpm_unet import DDPMUNet
from ddae.official import OfficialImportError
from ddae.official.conversion import (
    DDPM_FRAMEWORK,
    Converted,
    check_expected,
    plain,
    provenance,
    refuse_oversized,
)

_DIFFUSERS_SKIP = {"dropout"}  # training-only: our spec keeps the paper's 0.1


def ddpm_unet_config_from_diffusers(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our ``ddpm_unet`` spec for a diffusers ``UNet2DModel`` config (names the bad key)."""
    try:
        channels = [int(c) for c in config["block_out_channels"]]
        base = channels[0]
        if any(c % base for c in channels):
            raise OfficialImportError(
                f"block_out_channels: {channels} are not multiples of the first level"
            )
        down_types = list(config["down_block_types"])
        resolution = int(config["sample_size"])
        attn = []
        for level, kind in enumerate(down_types):
            if kind not in ("DownBlock2D", "AttnDownBlock2D"):
                raise OfficialImportError(f"down_block_types: unsupported block {kind!r}")
            if kind == "AttnDownBlock2D":
                attn.append(resolution >> level)
        return {
            "arch": "ddpm_unet",
            "resolution": resolution,
            "in_channels": int(config["in_channels"]),
            "base_channels": base,
            "channel_mult": [c // base for c in channels],
            "num_blocks": int(config["layers_per_block"]),
            "attn_resolutions": attn,
            "dropout": 0.1,  # Ho et al.'s CIFAR-10 dropout (training only)
        }
    except KeyError as error:
        raise OfficialImportError(f"{error.args[0]}: required key is missing") from error


def _compare_configs(ours: Mapping[str, Any], theirs: Mapping[str, Any], where: str) -> None:
    for key in sorted(set(ours) | set(theirs)):
        if key.startswith("_") or key in _DIFFUSERS_SKIP:
            continue
        if key not in ours or key not in theirs:
            missing = "ours" if key not in ours else "the source"
            raise OfficialImportError(f"{where}: config key {key!r} is missing in {missing}")
        if plain(ours[key]) != plain(theirs[key]):
            raise OfficialImportError(
                f"{where}: config key {key!r} differs: source has {theirs[key]!r}, "
                f"ddpm_unet builds {ours[key]!r}"
            )


def _ddpm_framework_from_scheduler(path: Path) -> dict[str, Any]:
    scheduler = json.loads(path.read_text())
    expected = {
        "num_train_timesteps": 1000,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "beta_schedule": "linear",
    }
    for key, value in expected.items():
        found = scheduler.get(key, value)
        same = math.isclose(found, value) if isinstance(value, float) else found == value
        if not same:
            raise OfficialImportError(
                f"{path}: scheduler key {key!r} is {found!r}, the DDPM framework needs {value!r}"
            )
    return dict(DDPM_FRAMEWORK)


def read_ddpm_diffusers(
    folder: Path, *, url: str | None, expected: Mapping[str, Any] | None
) -> Converted:
    """Read a diffusers ``UNet2DModel`` folder (google/ddpm-cifar10-32) into our ``ddpm_unet``."""
    from diffusers import UNet2DModel

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise OfficialImportError(f"{folder}: no config.json (not a diffusers model folder)")
    source_config = json.loads(config_path.read_text())
    class_name = source_config.get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise OfficialImportError(f"{config_path}: _class_name is {class_name!r}, not UNet2DModel")
    spec = ddpm_unet_config_from_diffusers(source_config)
    scheduler = folder / "scheduler_config.json"
    framework = _ddpm_framework_from_scheduler(scheduler) if scheduler.is_file() else DDPM_FRAMEWORK
    weights = sorted(folder.glob("diffusion_pytorch_model.*"))
    # nothing is built before the file's spec is known to be the expected, plausible one
    if expected is not None:
        check_expected("ddpm", spec, framework, expected, str(config_path))
    refuse_oversized(spec, sum(path.stat().st_size for path in weights), str(config_path))
    network = build_network(spec)
    assert isinstance(network, DDPMUNet)
    source = UNet2DModel.from_pretrained(folder, local_files_only=True)  # weights_only load
    _compare_configs(network.unet.config, source.config, str(config_path))
    network.unet.load_state_dict(source.state_dict(), strict=True)

    files = [config_path, *weights] + ([scheduler] if scheduler.is_file() else [])
    record = provenance("ddpm", files, url, "ddae.official.ddpm.read_ddpm_diffusers")
    return Converted(network, framework, record)
