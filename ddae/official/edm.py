"""EDM (Karras et al.) from ``edm-cifar10-32x32-uncond-vp.pkl`` → our ``ddpmpp`` under the EDM
framework (paper Appendix A: the CIFAR-10 EDM checkpoint of Tables 2-4 and Figure 5).

The pickle is read by `ddae.official.edm_pickle` (allow-list unpickler; no embedded source
runs; expanded sizes bounded, `ddae.official.bounds`). The SongUNet's ``_init_kwargs`` become our
config (unsupported keys/values are named) and the ``ema`` network's state loads with
``strict=True``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddae.networks import build_network
from ddae.official import OfficialImportError
from ddae.official.bounds import VALUE_LIMITS, check_expanded_size
from ddae.official.conversion import (
    Converted,
    check_expected,
    plain,
    provenance,
    refuse_oversized,
)
from ddae.official.edm_pickle import (
    PersistentObject,
    load_edm_pickle,
    module_state_dict,
    submodule,
)

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
# keys whose value is fixed by our DDPM++ implementation: EDM's defaults (unconditional)
_EDM_FIXED = {
    key: EDM_SONGUNET_DEFAULTS[key]
    for key in (
        "label_dim",
        "label_dropout",
        "embedding_type",
        "channel_mult_noise",
        "encoder_type",
        "decoder_type",
        "resample_filter",
    )
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
        value = plain(value, f"SongUNet init kwarg {key!r}")
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


def _bounded_init_kwargs(record: PersistentObject, where: str) -> dict[str, Any]:
    """``record``'s ``_init_kwargs``, refused (naming ``where``) unless a str mapping within
    `VALUE_LIMITS` expanded (`ddae.official.bounds`)."""
    try:
        kwargs = record.init_kwargs
    except pickle.UnpicklingError as error:
        raise OfficialImportError(f"{where}: {error}") from None
    check_expanded_size(kwargs, f"{where}._init_kwargs", VALUE_LIMITS)
    return kwargs


def read_edm_pickle(
    pickle_path: Path, *, url: str | None, expected: Mapping[str, Any] | None
) -> Converted:
    """Read EDM's ``{"ema": EDMPrecond(SongUNet), ...}`` pickle into our ``ddpmpp``."""
    data = load_edm_pickle(pickle_path)
    if "ema" not in data:
        keys = sorted(map(str, data))
        raise OfficialImportError(f"{pickle_path}: no 'ema' network (keys: {keys})")
    precond = data["ema"]
    if getattr(precond, "class_name", None) != "EDMPrecond":
        found = getattr(precond, "class_name", type(precond).__name__)
        raise OfficialImportError(f"{pickle_path}: 'ema' is {found}, expected EDMPrecond")
    precond_kwargs = _bounded_init_kwargs(precond, f"{pickle_path}: ema")
    model_type = precond_kwargs.get("model_type", "DhariwalUNet")
    if model_type != "SongUNet":
        raise OfficialImportError(f"{pickle_path}: EDMPrecond model_type={model_type!r}")
    model = submodule(precond, "model")
    if model.class_name != "SongUNet":
        raise OfficialImportError(f"{pickle_path}: ema.model is {model.class_name}, not SongUNet")
    model_kwargs = _bounded_init_kwargs(model, f"{pickle_path}: ema.model")
    if not model_kwargs:
        raise OfficialImportError(f"{pickle_path}: SongUNet has no recorded _init_kwargs")
    spec = ddpmpp_config_from_edm(model_kwargs)
    sigma_data = precond.state.get("sigma_data", precond_kwargs.get("sigma_data", 0.5))
    if not isinstance(sigma_data, (int, float, np.floating)):
        found = type(sigma_data).__name__
        raise OfficialImportError(f"{pickle_path}: EDMPrecond sigma_data is a {found}, not a float")
    sigma_data = float(sigma_data)
    framework = {"kind": "edm", "sigma_data": sigma_data}
    # nothing is built before the file's spec is known to be the expected, plausible one
    if expected is not None:
        check_expected("edm", spec, framework, expected, str(pickle_path))
    state = module_state_dict(model)  # visited set and size budget (ddae.official.edm_pickle)
    values = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    refuse_oversized(spec, values, str(pickle_path))
    network = build_network(spec)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise OfficialImportError(f"{pickle_path}: weights do not match ddpmpp: {error}") from error
    record = provenance("edm", [pickle_path], url, "ddae.official.edm.read_edm_pickle")
    record["edm_precond_kwargs"] = {
        k: plain(v.item() if hasattr(v, "item") else v) for k, v in precond_kwargs.items()
    }
    return Converted(network, framework, record)
