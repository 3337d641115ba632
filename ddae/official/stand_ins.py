"""Stand-ins for the CPU smoke run (no downloads): randomly initialised networks in the formats
of the official checkpoints (paper Appendix A), ddae checkpoints of a DiT, a DDPM UNet or a
DDPM++ (the validation target's miniature, tests/test_validation.py) and an SD-VAE-shaped
diffusers folder. They are labelled stand-ins (`STAND_IN_NOTE`) and in no way trained.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ddae.configs import ConfigError
from ddae.networks import build_network, network_config
from ddae.networks.dit import DiT
from ddae.official import OfficialImportError
from ddae.official.conversion import DDPM_FRAMEWORK, Converted, write_checkpoint

log = logging.getLogger(__name__)

STAND_IN_NOTE = "randomly initialised stand-in for the official checkpoint; not trained"

# A VAE with the SD layout scaled down: 4 encoder levels (spatial factor 8, as `ddae.latents`
# assumes), 4 latent channels, 8 channels per level, one ResNet per level.
STAND_IN_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
}

# What each checkpoint stand-in is: its network's architecture and the framework the official
# importer writes (`ddae.official.ddpm`, `ddae.official.edm`: EDM's pickle stores σ_data = 0.5,
# EDM Table 1; `ddae.official.dit`).
STAND_IN_ARCHS = {"ddpm": "ddpm_unet", "edm": "ddpmpp", "dit": "dit"}
STAND_IN_FRAMEWORKS = {
    "ddpm": DDPM_FRAMEWORK,
    "edm": {"kind": "edm", "sigma_data": 0.5},
    "dit": DDPM_FRAMEWORK,
}
DIT_INIT = "DiT initialisation, but Xavier instead of zeros for adaLN and final linears"

STAND_IN_VAE_LOGVAR_SHIFT = 10.0
STAND_IN_SCALE = 0.18215  # the SD latent scaling, `ddae.settings.caches.LatentCacheConfig.scale`


def _differing_dit_blocks(network: torch.nn.Module) -> None:
    """DiT's adaLN-Zero init makes every block the identity: initialise the zero-initialised
    modulation and output linears like DiT's other linears (Xavier) so the blocks differ."""
    assert isinstance(network, DiT)
    with torch.no_grad():
        for block in network.blocks:
            torch.nn.init.xavier_uniform_(block.adaLN_modulation[-1].weight)
        torch.nn.init.xavier_uniform_(network.final_layer.adaLN_modulation[-1].weight)
        torch.nn.init.xavier_uniform_(network.final_layer.linear.weight)


def _stand_in_network(kind: str, dest: Path, spec: Mapping[str, Any], seed: int) -> Path:
    """A randomly initialised network of ``spec`` (``arch`` may be left out) as a ddae
    checkpoint under the framework the official ``kind`` imports with."""
    spec = dict(spec)
    arch = spec.setdefault("arch", STAND_IN_ARCHS[kind])
    if arch != STAND_IN_ARCHS[kind]:
        raise OfficialImportError(
            f"spec.arch: a {kind} stand-in needs arch {STAND_IN_ARCHS[kind]!r}, got {arch!r}"
        )
    try:
        network_config(spec, "spec")
    except ConfigError as error:
        raise OfficialImportError(str(error)) from error
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(spec)
        if kind == "dit":
            _differing_dit_blocks(network)
    source = {"kind": "stand-in", "stands_in_for": kind, "seed": seed, "note": STAND_IN_NOTE}
    if kind == "dit":
        source["init"] = DIT_INIT
    source["importer"] = "ddae.official.stand_ins.write_stand_in"
    return write_checkpoint(Converted(network, dict(STAND_IN_FRAMEWORKS[kind]), source), dest, 0)


def _stand_in_vae(dest: Path, spec: Mapping[str, Any], seed: int) -> Path:
    from diffusers import AutoencoderKL

    unknown = sorted(set(spec) - set(STAND_IN_VAE))
    if unknown:
        raise OfficialImportError(
            f"spec: unknown VAE key {unknown[0]!r} (allowed: {', '.join(sorted(STAND_IN_VAE))})"
        )
    config = {**STAND_IN_VAE, **spec}
    if len(config["down_block_types"]) != 4:
        raise OfficialImportError(
            "spec.down_block_types: the latent cache assumes a spatial factor of 8 (4 levels)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        )
        # At random init the posterior mean is small (std ≈ 0.2) and its log-variance ≈ 0, so
        # a sampled latent would be mostly noise. Like a trained SD VAE, whose 0.18215-scaled
        # latents have about unit std and a narrow posterior: scale the mean outputs so that
        # 0.18215 × mean has unit std on uniform-noise images, and shift the log-variance so
        # that σ ≈ e^-5.
        latent = config["latent_channels"]
        side = config["sample_size"]
        probe = torch.rand(8, config["in_channels"], side, side) * 2 - 1
        with torch.no_grad():
            moments = vae.quant_conv(vae.encoder(probe))
            gain = 1.0 / (STAND_IN_SCALE * float(moments[:, :latent].std()))
            vae.quant_conv.weight[:latent] *= gain
            vae.quant_conv.bias[:latent] *= gain
            vae.quant_conv.bias[latent:] -= STAND_IN_VAE_LOGVAR_SHIFT
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        vae.save_pretrained(tmp, safe_serialization=True)
        provenance = {
            "kind": "stand-in",
            "stands_in_for": "vae",
            "seed": seed,
            "init": "diffusers AutoencoderKL initialisation; posterior mean rescaled to unit "
            f"std × {STAND_IN_SCALE} on uniform noise, log-variance shifted by "
            f"-{STAND_IN_VAE_LOGVAR_SHIFT}",
        }
        (tmp / "stand_in.json").write_text(
            json.dumps({**provenance, "note": STAND_IN_NOTE, "config": config}, indent=2) + "\n"
        )
        if dest.exists():
            shutil.rmtree(dest)
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote a random VAE stand-in (seed %d) to %s", seed, dest)
    return dest


def write_stand_in(
    kind: str, dest: str | Path, spec: Mapping[str, Any] | None = None, seed: int = 0
) -> Path:
    """Write a randomly initialised stand-in for an official checkpoint (CPU smoke runs).

    ``dit``: a ddae checkpoint (``dest`` a file) of a DiT with network ``spec`` (``arch`` may be
    left out) under the DDPM framework (T = 1000, linear β), as `ddae.official.dit` imports one;
    ``source`` = ``{"kind": "stand-in", "seed", "note": STAND_IN_NOTE, ...}``. ``vae``: a
    diffusers ``AutoencoderKL`` folder (``dest`` a directory) that `ddae.latents.load_vae`
    loads, `STAND_IN_VAE` updated by ``spec`` (may be empty): spatial factor 8, so the latent
    config's ``image_size`` fixes the latent side (32 px → 4×4, 64 px → 8×8), plus a
    ``stand_in.json`` with the seed and note. ``ddpm`` / ``edm``: a ddae checkpoint of a
    ``ddpm_unet`` / ``ddpmpp`` network ``spec`` under the framework the official importer writes
    (`STAND_IN_FRAMEWORKS`). Weights are a fixed function of ``seed``.
    """
    dest = Path(dest)
    spec = dict(spec or {})
    if kind == "vae":
        return _stand_in_vae(dest, spec, int(seed))
    if kind in STAND_IN_ARCHS:
        return _stand_in_network(kind, dest, spec, int(seed))
    raise OfficialImportError(
        f"unknown stand-in kind {kind!r} (choose from ['ddpm', 'dit', 'edm', 'vae'])"
    )
