"""Official pre-trained checkpoints, downloaded and converted into ddae checkpoints (paper
Appendix A: "For CIFAR-10, we retrieve official checkpoints from their codebases"; DiT-XL/2 and
the Stable Diffusion VAE for the transfer rows of Tables 3 and 4).

Each import writes a ``ddae-checkpoint/2`` file (`ddae.checkpoints`) whose run config rebuilds
network and framework by itself, so every later stage (FID, features, probes, fine-tuning) reads
an imported model exactly like one trained here. The payload's ``source`` records provenance:
the URL, each source file's sha256 and size, and the importer.

* DDPM (Ho et al.): the diffusers folder google/ddpm-cifar10-32 → ``ddpm_unet`` under the DDPM
  framework. The folder's config must equal our `DDPMUNet` spec key by key (else the differing
  key is named); a ``scheduler_config.json`` must describe T = 1000 linear β 1e-4..0.02.
* EDM (Karras et al.): ``edm-cifar10-32x32-uncond-vp.pkl`` → ``ddpmpp`` under the EDM framework,
  read by `ddae.edm_pickle` (allow-list unpickler; no embedded source runs). The SongUNet's
  ``_init_kwargs`` become our config (unsupported keys/values are named) and the ``ema``
  network's state loads with ``strict=True``.
* DiT-XL/2-256 (Peebles & Xie): the original state dict → ``dit`` (`ddae.networks.dit`, original
  parameter names, strict load) under DDPM with T = 1000 linear β, on VAE latents.
* The SD VAE ft-MSE is not converted: `ddae.latents` loads its diffusers folder directly.

Downloads (`download_official`) stream through a temporary file and are renamed into place only
when the published checksum matches; where no checksum is published the sha256 is logged and
recorded at import time instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddae.checkpoints import save_checkpoint
from ddae.configs import ConfigError, to_mapping
from ddae.diffusion import build_framework, framework_config
from ddae.downloads import open_source
from ddae.edm_pickle import load_edm_pickle, module_state_dict, submodule
from ddae.networks import build_network, count_parameters, network_config, network_spec
from ddae.networks.ddpm_unet import DDPMUNet
from ddae.networks.dit import DiT
from ddae.results import atomic_output

log = logging.getLogger(__name__)


class OfficialImportError(ValueError):
    """An official checkpoint does not match what the paper used (the message names the key)."""


@dataclass(frozen=True)
class OfficialSource:
    """Where an official checkpoint lives: one file, or a folder of files under a base URL."""

    url: str  # file URL, or base URL ending in "/" for folder sources
    files: dict[str, str | None] = field(default_factory=dict)  # folder: name -> checksum
    checksum: str | None = None  # single file: hex md5 or sha256 (None: none published)
    reference: str = ""  # where the checksum was published


SOURCES: dict[str, OfficialSource] = {
    "ddpm": OfficialSource(
        url="https://huggingface.co/google/ddpm-cifar10-32/resolve/main/",
        files={
            "config.json": None,  # small git file: no LFS sha256 published
            "scheduler_config.json": None,
            "diffusion_pytorch_model.safetensors": (
                "1558dbe3fb093b0857d473e376b711eeda1b186c557be5e85b3a56300cd49f0f"
            ),
        },
        reference="https://huggingface.co/google/ddpm-cifar10-32/blob/main/"
        "diffusion_pytorch_model.safetensors (Git LFS SHA256)",
    ),
    "edm": OfficialSource(
        url="https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",
        # NVIDIA publishes no checksum; this sha256 is the one independent public reproductions
        # (consistency-training launch scripts and notes that reuse this file) verify against
        checksum="4d5dcc1f1d0d41c8934ad21626eeddbdc0460182becf9fc059a0631b1eedb4da",
        reference="third-party records of the NVIDIA file (no official checksum exists)",
    ),
    "dit": OfficialSource(
        url="https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
        checksum=None,  # facebookresearch/DiT download.py publishes no checksum
    ),
    "vae": OfficialSource(
        url="https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/",
        files={
            "config.json": None,
            "diffusion_pytorch_model.safetensors": (
                "a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815"
            ),
        },
        reference="https://huggingface.co/stabilityai/sd-vae-ft-mse/blob/main/"
        "diffusion_pytorch_model.safetensors (Git LFS SHA256)",
    ),
}


# ---------------------------------------------------------------------------------------------
# Downloads and checksums
# ---------------------------------------------------------------------------------------------


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"<hex>"`` or ``"sha256:<hex>"`` / ``"md5:<hex>"`` → (algorithm, lower-case hex)."""
    text = checksum.strip().lower()
    if ":" in text:
        algorithm, _, digest = text.partition(":")
    else:
        algorithm, digest = ("md5" if len(text) == 32 else "sha256"), text
    lengths = {"md5": 32, "sha256": 64}
    if algorithm not in lengths or not re.fullmatch(rf"[0-9a-f]{{{lengths[algorithm]}}}", digest):
        raise OfficialImportError(
            f"checksum must be a hex md5 (32) or sha256 (64) digest, got {checksum!r}"
        )
    return algorithm, digest


def file_sha256(path: str | Path) -> str:
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _download_file(
    url: str, dest: Path, checksum: str | None, timeout_s: float, chunk_size: int = 1 << 20
) -> str:
    """Stream ``url`` to ``dest`` atomically; verify ``checksum`` if given. Returns its sha256."""
    algorithm, expected = _parse_checksum(checksum) if checksum else ("sha256", None)
    digest = hashlib.new(algorithm)
    sha256 = hashlib.sha256()
    expected_text = f"{algorithm} {expected}" if expected else None
    with open_source(url, dest, expected_text, timeout_s) as response, atomic_output(dest) as out:
        while chunk := response.read(chunk_size):
            digest.update(chunk)
            sha256.update(chunk)
            out.write(chunk)
        if expected is not None and digest.hexdigest() != expected:
            raise OfficialImportError(
                f"{url}: downloaded {algorithm} is {digest.hexdigest()}, expected {expected}; "
                f"{dest} was not written"
            )
    if expected is None:
        log.warning("%s: no published checksum; downloaded sha256 %s", url, sha256.hexdigest())
    else:
        log.info("downloaded %s to %s (%s verified)", url, dest, algorithm)
    return sha256.hexdigest()


def download_official(
    kind: str,
    dest: str | Path,
    url: str | None = None,
    checksum: str | None = None,
    timeout_s: float = 60.0,
) -> dict[str, str]:
    """Download the official ``kind`` checkpoint (``ddpm``, ``edm``, ``dit``, ``vae``) to ``dest``.

    ``ddpm`` and ``vae`` are diffusers folders (``dest`` is the folder; ``url`` a base URL and
    ``checksum`` that of the weights file); ``edm`` and ``dit`` are single files. Without ``url``
    and ``checksum`` the published ones in `SOURCES` are used; a custom ``url`` without a
    ``checksum`` is downloaded unverified (its sha256 is logged). Returns {file name: sha256}.
    """
    if kind not in SOURCES:
        raise OfficialImportError(
            f"unknown official checkpoint {kind!r} (choose from {sorted(SOURCES)})"
        )
    source = SOURCES[kind]
    custom_url = url is not None
    dest = Path(dest)
    if source.files:
        base = url if custom_url else source.url
        if not base.endswith("/"):
            base += "/"
        digests = {}
        for name, published in source.files.items():
            expected = published
            if name.endswith((".safetensors", ".bin")) and (checksum or custom_url):
                expected = checksum
            digests[name] = _download_file(base + name, dest / name, expected, timeout_s)
        return digests
    expected = checksum if (checksum or custom_url) else source.checksum
    digest = _download_file(url or source.url, dest, expected, timeout_s)
    return {dest.name: digest}


def _provenance(kind: str, paths: list[Path], url: str | None, importer: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "url": url,
        "files": {
            path.name: {"sha256": file_sha256(path), "bytes": path.stat().st_size} for path in paths
        },
        "importer": importer,
    }


def _refuse_oversized(spec: Mapping[str, Any], values_in_file: int, where: str) -> None:
    """Refuse a network spec with more parameters than the file can hold values for.

    The count comes from building the network on PyTorch's "meta" device (shapes only, no
    memory), so a forged spec (e.g. ``model_channels: 4096``) cannot exhaust memory.
    """
    with torch.device("meta"):
        wanted = count_parameters(build_network(spec))
    if wanted > values_in_file:
        raise OfficialImportError(
            f"{where}: the file's network spec has {wanted:,} parameters but the file holds "
            f"only {values_in_file:,} values; refusing to build it"
        )


def _normalised(spec: Mapping[str, Any], tag: str, where: str) -> dict[str, Any]:
    """``spec`` with every default filled in: what ``network_spec(build_network(spec))`` gives
    (every network keeps the Config it is built from), without building the network."""
    config = network_config(spec, where) if tag == "arch" else framework_config(spec, where)
    return {tag: spec[tag], **to_mapping(config)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    return _plain(a) == _plain(b)


def check_expected(
    kind: str,
    network: Mapping[str, Any],
    framework: Mapping[str, Any],
    expected: Mapping[str, Any],
    where: str,
) -> None:
    """Compare an imported checkpoint's network and framework with the run's config.

    ``expected`` is ``{"network": spec, "framework": spec}`` (either may be left out), as in
    config.yaml; both sides are normalised with defaults filled in and compared key by key (in
    sorted order). The first difference raises `OfficialImportError` naming the key and both
    values. The DDPM ``dropout`` is a training setting the diffusers folder does not record:
    it is ignored for ``ddpm``.
    """
    if not isinstance(expected, Mapping):
        raise OfficialImportError(f"expected: a mapping {{network, framework}}, got {expected!r}")
    unknown = sorted(set(expected) - {"network", "framework"})
    if unknown:
        raise OfficialImportError(
            f"expected: unknown key {unknown[0]!r} (allowed: framework, network)"
        )
    ignored = {"dropout"} if kind == "ddpm" else set()
    for part, tag, found in (("network", "arch", network), ("framework", "kind", framework)):
        if part not in expected:
            continue
        try:
            want = _normalised(expected[part], tag, f"expected.{part}")
        except ConfigError as error:
            raise OfficialImportError(str(error)) from error
        have = _normalised(found, tag, part)
        keys = [tag] + sorted((set(want) | set(have)) - {tag})
        for key in keys:
            if part == "network" and key in ignored:
                continue
            if key not in have or key not in want or not _same(have[key], want[key]):
                raise OfficialImportError(
                    f"{where}: {part}.{key} of the imported checkpoint is "
                    f"{have.get(key, '<missing>')!r}, the config expects "
                    f"{want.get(key, '<missing>')!r}"
                )


def _write(
    network: torch.nn.Module,
    framework: Mapping[str, Any],
    dest: str | Path,
    epoch: int,
    source: dict[str, Any],
    expected: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``network`` as a ddae checkpoint with identical model and EMA weights.

    With ``expected`` (`check_expected`) nothing is written unless network and framework match.
    """
    spec = network_spec(network)
    build_framework(framework)  # validate
    if expected is not None:
        check_expected(source["kind"], spec, framework, expected, str(dest))
    state = network.state_dict()
    payload = {
        "run": {"network": spec, "framework": dict(framework)},
        "epoch": epoch,
        "model": state,
        "ema": state,
        "source": source,
    }
    save_checkpoint(payload, dest)
    log.info("wrote %s from %s", dest, source.get("files") or source["kind"])
    return Path(dest)


# ---------------------------------------------------------------------------------------------
# DDPM: diffusers folder -> ddpm_unet
# ---------------------------------------------------------------------------------------------

DDPM_FRAMEWORK = {"kind": "ddpm", "timesteps": 1000, "beta_min": 1e-4, "beta_max": 0.02}
_DIFFUSERS_SKIP = {"dropout"}  # training-only: our spec keeps the paper's 0.1


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
        if _plain(ours[key]) != _plain(theirs[key]):
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


def import_ddpm_diffusers(
    folder: str | Path,
    dest: str | Path,
    *,
    epoch: int = 0,
    url: str | None = None,
    expected: Mapping[str, Any] | None = None,
) -> Path:
    """Convert a diffusers ``UNet2DModel`` folder (google/ddpm-cifar10-32) to a checkpoint."""
    from diffusers import UNet2DModel

    folder = Path(folder)
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
    _refuse_oversized(spec, sum(path.stat().st_size for path in weights), str(config_path))
    network = build_network(spec)
    assert isinstance(network, DDPMUNet)
    source = UNet2DModel.from_pretrained(folder, local_files_only=True)  # weights_only load
    _compare_configs(network.unet.config, source.config, str(config_path))
    network.unet.load_state_dict(source.state_dict(), strict=True)

    files = [config_path, *weights] + ([scheduler] if scheduler.is_file() else [])
    provenance = _provenance("ddpm", files, url, "ddae.official.import_ddpm_diffusers")
    return _write(network, framework, dest, epoch, provenance, expected)


# ---------------------------------------------------------------------------------------------
# EDM: network pickle -> ddpmpp
# ---------------------------------------------------------------------------------------------

# EDM's SongUNet defaults (training/networks.py): _init_kwargs only holds what was passed.
EDM_SONGUNET_DEFAULTS: dict[str, Any] = {
    "label_dim": 0,
    "augment_dim": 0,
    "model_channels": 128,
    "channel_mult": [1, 2, 2, 2],
    "channel_mult_emb": 4,
    "num_blocks": 4,
    "attn_resolutions": [16],
    "dropout": 0.10,
    "label_dropout": 0,
    "embedding_type": "positional",
    "channel_mult_noise": 1,
    "encoder_type": "standard",
    "decoder_type": "standard",
    "resample_filter": [1, 1],
}
# keys whose value is fixed by our DDPM++ implementation
_EDM_FIXED = {
    "label_dim": 0,
    "label_dropout": 0,
    "embedding_type": "positional",
    "channel_mult_noise": 1,
    "encoder_type": "standard",
    "decoder_type": "standard",
    "resample_filter": [1, 1],
}
_EDM_RENAMED = {"img_resolution": "resolution"}
_EDM_COPIED = (
    "in_channels",
    "out_channels",
    "augment_dim",
    "model_channels",
    "channel_mult",
    "channel_mult_emb",
    "num_blocks",
    "attn_resolutions",
    "dropout",
)


def ddpmpp_config_from_edm(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Our ``ddpmpp`` spec from EDM ``SongUNet`` init kwargs; unsupported keys are named."""
    kwargs = {**EDM_SONGUNET_DEFAULTS, **init_kwargs}
    spec: dict[str, Any] = {"arch": "ddpmpp"}
    for key, value in kwargs.items():
        value = _plain(value)
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if key in _EDM_FIXED:
            if value != _EDM_FIXED[key]:
                raise OfficialImportError(
                    f"SongUNet {key}={value!r} is not supported by our DDPM++ "
                    f"(only {_EDM_FIXED[key]!r})"
                )
        elif key in _EDM_RENAMED:
            spec[_EDM_RENAMED[key]] = int(value)
        elif key in _EDM_COPIED:
            spec[key] = value
        else:
            raise OfficialImportError(f"SongUNet init kwarg {key!r} is not supported by ddpmpp")
    for required in ("img_resolution", "in_channels", "out_channels"):
        if required not in kwargs:
            raise OfficialImportError(f"SongUNet init kwarg {required!r} is missing")
    spec["dropout"] = float(spec["dropout"])
    return spec


def import_edm_pickle(
    pickle_path: str | Path,
    dest: str | Path,
    *,
    epoch: int = 0,
    url: str | None = None,
    expected: Mapping[str, Any] | None = None,
) -> Path:
    """Convert EDM's ``{"ema": EDMPrecond(SongUNet), ...}`` pickle to a checkpoint."""
    pickle_path = Path(pickle_path)
    data = load_edm_pickle(pickle_path)
    if "ema" not in data:
        raise OfficialImportError(f"{pickle_path}: no 'ema' network (keys: {sorted(data)})")
    precond = data["ema"]
    if getattr(precond, "class_name", None) != "EDMPrecond":
        found = getattr(precond, "class_name", type(precond).__name__)
        raise OfficialImportError(f"{pickle_path}: 'ema' is {found}, expected EDMPrecond")
    precond_kwargs = precond.init_kwargs
    model_type = precond_kwargs.get("model_type", "DhariwalUNet")
    if model_type != "SongUNet":
        raise OfficialImportError(f"{pickle_path}: EDMPrecond model_type={model_type!r}")
    model = submodule(precond, "model")
    if model.class_name != "SongUNet":
        raise OfficialImportError(f"{pickle_path}: ema.model is {model.class_name}, not SongUNet")
    if not model.init_kwargs:
        raise OfficialImportError(f"{pickle_path}: SongUNet has no recorded _init_kwargs")
    spec = ddpmpp_config_from_edm(model.init_kwargs)
    sigma_data = float(precond.state.get("sigma_data", precond_kwargs.get("sigma_data", 0.5)))
    framework = {"kind": "edm", "sigma_data": sigma_data}
    # nothing is built before the file's spec is known to be the expected, plausible one
    if expected is not None:
        check_expected("edm", spec, framework, expected, str(pickle_path))
    state = module_state_dict(model)  # visited set and size budget (ddae.edm_pickle)
    values = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    _refuse_oversized(spec, values, str(pickle_path))
    network = build_network(spec)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise OfficialImportError(f"{pickle_path}: weights do not match ddpmpp: {error}") from error
    provenance = _provenance("edm", [pickle_path], url, "ddae.official.import_edm_pickle")
    provenance["edm_precond_kwargs"] = {
        k: _plain(v.item() if hasattr(v, "item") else v) for k, v in precond_kwargs.items()
    }
    return _write(network, framework, dest, epoch, provenance, expected)


# ---------------------------------------------------------------------------------------------
# DiT: original state dict -> dit
# ---------------------------------------------------------------------------------------------

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


def import_dit(
    state_path: str | Path,
    dest: str | Path,
    *,
    network: Mapping[str, Any] | None = None,
    epoch: int = 0,
    url: str | None = None,
    expected: Mapping[str, Any] | None = None,
) -> Path:
    """Convert the original DiT state dict (DiT-XL-2-256x256.pt) to a checkpoint.

    ``network`` is the expected ``dit`` spec (default DiT-XL/2); the shapes in the file must
    agree with it key by key.
    """
    state_path = Path(state_path)
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
    provenance = _provenance("dit", [state_path], url, "ddae.official.import_dit")
    return _write(model, DDPM_FRAMEWORK, dest, epoch, provenance, expected)


IMPORTERS = {"ddpm": import_ddpm_diffusers, "edm": import_edm_pickle, "dit": import_dit}


def import_official(
    kind: str,
    source: str | Path,
    dest: str | Path,
    *,
    epoch: int = 0,
    url: str | None = None,
    network: Mapping[str, Any] | None = None,
    expected: Mapping[str, Any] | None = None,
) -> Path:
    """Convert the official ``kind`` (``ddpm``, ``edm``, ``dit``) at ``source`` into ``dest``.

    ``expected`` = ``{"network": spec, "framework": spec}`` (the run's config.yaml entry): the
    imported network spec and framework must match it key by key, defaults filled in
    (`check_expected`); otherwise `OfficialImportError` names the first differing key and
    nothing is written.
    """
    if kind not in IMPORTERS:
        raise OfficialImportError(
            f"unknown official import {kind!r} (choose from {sorted(IMPORTERS)})"
        )
    if network is not None and kind != "dit":
        raise OfficialImportError(f"network: only the dit import takes a network spec, not {kind}")
    if kind == "dit":
        return import_dit(source, dest, network=network, epoch=epoch, url=url, expected=expected)
    return IMPORTERS[kind](source, dest, epoch=epoch, url=url, expected=expected)


# ---------------------------------------------------------------------------------------------
# Stand-ins for the CPU smoke run (no downloads): random weights in the official formats
# ---------------------------------------------------------------------------------------------

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

STAND_IN_VAE_LOGVAR_SHIFT = 10.0
STAND_IN_SCALE = 0.18215  # the SD latent scaling `ddae.latents.LatentCacheConfig.scale` applies


def _stand_in_dit(dest: Path, spec: Mapping[str, Any], seed: int) -> Path:
    spec = dict(spec)
    arch = spec.setdefault("arch", "dit")
    if arch != "dit":
        raise OfficialImportError(f"spec.arch: a dit stand-in needs arch 'dit', got {arch!r}")
    try:
        network_config(spec, "spec")
    except ConfigError as error:
        raise OfficialImportError(str(error)) from error
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(spec)
        assert isinstance(network, DiT)
        # DiT's adaLN-Zero init makes every block the identity: initialise the zero-initialised
        # modulation and output linears like DiT's other linears (Xavier) so the blocks differ.
        with torch.no_grad():
            for block in network.blocks:
                torch.nn.init.xavier_uniform_(block.adaLN_modulation[-1].weight)
            torch.nn.init.xavier_uniform_(network.final_layer.adaLN_modulation[-1].weight)
            torch.nn.init.xavier_uniform_(network.final_layer.linear.weight)
    source = {
        "kind": "stand-in",
        "stands_in_for": "dit",
        "seed": seed,
        "note": STAND_IN_NOTE,
        "init": "DiT initialisation, but Xavier instead of zeros for adaLN and final linears",
        "importer": "ddae.official.write_stand_in",
    }
    return _write(network, DDPM_FRAMEWORK, dest, 0, source)


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
    left out) under the DDPM framework (T = 1000, linear β), the same as `import_dit` writes;
    ``source`` = ``{"kind": "stand-in", "seed", "note": STAND_IN_NOTE, ...}``. ``vae``: a
    diffusers ``AutoencoderKL`` folder (``dest`` a directory) that `ddae.latents.load_vae`
    loads, `STAND_IN_VAE` updated by ``spec`` (may be empty): spatial factor 8, so the latent
    config's ``image_size`` fixes the latent side (32 px → 4×4, 64 px → 8×8), plus a
    ``stand_in.json`` with the seed and note. Weights are a fixed function of ``seed``.
    """
    dest = Path(dest)
    spec = dict(spec or {})
    if kind == "dit":
        return _stand_in_dit(dest, spec, int(seed))
    if kind == "vae":
        return _stand_in_vae(dest, spec, int(seed))
    raise OfficialImportError(f"unknown stand-in kind {kind!r} (choose from ['dit', 'vae'])")
