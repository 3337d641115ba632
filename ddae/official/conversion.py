"""What every importer of an official checkpoint shares (paper Appendix A): the check of the
imported network and framework against the run's config, the refusal of a spec larger than
its file, the provenance record, and writing the ddae checkpoint (`ddae.checkpoints`).
Values read from a file are converted by `plain` only after their expanded size is bounded
(`ddae.official.bounds`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddae.checkpoints import save_checkpoint
from ddae.configs import ConfigError, to_mapping
from ddae.diffusion import build_framework, framework_config
from ddae.downloads import file_sha256
from ddae.networks import build_network, count_parameters, network_config, network_spec
from ddae.official import OfficialImportError
from ddae.official.bounds import VALUE_LIMITS, DataLimits, check_expanded_size

log = logging.getLogger(__name__)

# Ho et al.'s DDPM (and DiT's) framework: T = 1000, linear β from 1e-4 to 0.02
DDPM_FRAMEWORK = {"kind": "ddpm", "timesteps": 1000, "beta_min": 1e-4, "beta_max": 0.02}


def plain(value: Any, where: str = "value", limits: DataLimits = VALUE_LIMITS) -> Any:
    """Tuples as lists, recursively (so specs compare equal to their YAML/JSON form).

    ``value`` may come from a file: its expanded size is checked against ``limits`` first
    (`check_expanded_size`, naming ``where``), and a list or tuple referenced twice is converted
    once (memoised by ``id``), so nothing grows beyond what the limits allow.
    """
    check_expanded_size(value, where, limits)
    converted: dict[int, list[Any]] = {}

    def convert(item: Any) -> Any:
        if not isinstance(item, (list, tuple)):
            return item
        if id(item) not in converted:
            converted[id(item)] = [convert(child) for child in item]
        return converted[id(item)]

    return convert(value)


def provenance(kind: str, paths: list[Path], url: str | None, importer: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "url": url,
        "files": {
            path.name: {"sha256": file_sha256(path), "bytes": path.stat().st_size} for path in paths
        },
        "importer": importer,
    }


def refuse_oversized(spec: Mapping[str, Any], values_in_file: int, where: str) -> None:
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
    return plain(a) == plain(b)


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


@dataclass
class Converted:
    """What an importer read from an official file: our network with its weights loaded, the
    framework it runs under, and the provenance record (``source``) for the checkpoint."""

    network: torch.nn.Module
    framework: dict[str, Any]
    source: dict[str, Any]


def write_checkpoint(
    converted: Converted,
    dest: str | Path,
    epoch: int,
    expected: Mapping[str, Any] | None = None,
) -> Path:
    """Save a converted network as a ddae checkpoint with identical model and EMA weights.

    With ``expected`` (`check_expected`) nothing is written unless network and framework match.
    """
    network, framework, source = converted.network, converted.framework, converted.source
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
