"""What a figure says about its own data (issue 22: each figure shows its effect or says it does
not): Figure 2's probe per panel, Figure 3's near-zero alignment and uniformity.

Each function returns the words a panel prints, computed from the result files it draws; an
empty string when there is nothing to say.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

# Figure 3, Eq. 4: L_uniform = log E exp(-2 ||f(x) - f(y)||^2) over L2-normalised features f.
# Spread features (||f(x) - f(y)||^2 near 2 on average) give about -4; above -0.1 the mean
# squared distance is at most 0.05, i.e. the mean cosine of two images' features is at least
# 0.975: the features of different images nearly coincide.
COLLAPSED_UNIFORMITY = -0.1
# Eq. 3: L_align = E ||f(x) - f(x')||^2 over two noisings of one image; below this the two views
# are the same point for the plot's purposes.
NEGLIGIBLE_ALIGNMENT = 1e-3


def fid_axis_label(extractors: set[str], base: str) -> str:
    """A FID axis label; FIDs from an offline stand-in extractor are said to be so."""
    others = sorted(extractors - {"inception"})
    if not others:
        return base
    return f"{base}\nwith the offline {', '.join(others)} extractor, not Inception"


def probe_text(choice: Mapping[str, Any] | None) -> str:
    """What trained a grid's probes, from its choice record's ``config`` (`ddae.probing`): the
    labels per class it saw (all by default) and its epochs; empty when it does not say."""
    config = (choice or {}).get("config")
    if not isinstance(config, dict) or "epochs" not in config:
        return ""
    per_class = config.get("labels_per_class")
    labels = "all labels" if per_class is None else f"{per_class} labels per class"
    return f"{labels}, {config['epochs']} epochs"


def alignment_note(data: pd.DataFrame, width: int = 44) -> str:
    """Why a Figure 3 panel's values are near zero, when they are (align_uniform rows of every
    drawn checkpoint: alignment, uniformity, t, steps, sigma)."""
    reasons = []
    if float(data["uniformity"].min()) > COLLAPSED_UNIFORMITY:
        reasons.append(
            f"Uniformity > {COLLAPSED_UNIFORMITY:g} everywhere: the features of different images "
            "nearly coincide (mean cosine ≥ 0.975), so both measures are near 0."
        )
    if float(data["alignment"].max()) < NEGLIGIBLE_ALIGNMENT:
        sigma = float(data["sigma"].iloc[0])
        t, steps = int(data["t"].iloc[0]), int(data["steps"].iloc[0])
        reasons.append(
            f"Alignment < {NEGLIGIBLE_ALIGNMENT:g}: at t = {t}/{steps} (σ = {sigma:.3g}) the two "
            "noisings of an image (the authors' positive pair) nearly coincide."
        )
    return "\n".join(textwrap.fill(reason, width) for reason in reasons)


# Figures 4-5: a run's samples "score as noise" when their FID is at least this fraction of the
# FID of Gaussian-noise images scored with the same extractor and reference (`noise_fid`, config
# `noise_reference`). Measured on the miniature (random-conv extractor, 256 images): noise 4.47,
# the tiny DDPM UNet's samples 4.2-4.8 (pure noise to the eye), the tiny EDM DDPM++'s 0.7-0.9.
NOISE_FRACTION = 0.75


def scores_as_noise(fid: Mapping[str, Any] | None) -> bool:
    """Whether a FID record's samples score no better than noise (`NOISE_FRACTION`)."""
    noise = (fid or {}).get("noise_fid")
    return noise is not None and float(fid["fid"]) >= NOISE_FRACTION * float(noise)


def noise_suffix(fids: Mapping[int, Mapping[str, Any]]) -> str:
    """A legend label's words for the checkpoints (epoch → FID record) scoring as noise."""
    noisy = [epoch for epoch, fid in sorted(fids.items()) if scores_as_noise(fid)]
    if not noisy:
        return ""
    if len(noisy) == len(fids):
        return ": samples score as noise"
    return f": samples of epoch {', '.join(map(str, noisy))} score as noise"


def draw_noise_level(ax: Any, fids: Sequence[Mapping[str, Any] | None]) -> None:
    """A dotted vertical line at the FID of Gaussian-noise images, when the records have one
    (each FID axis is one extractor and sample count, hence one noise FID)."""
    noise = [float(fid["noise_fid"]) for fid in fids if fid and fid.get("noise_fid") is not None]
    if noise:
        level = max(noise)
        ax.axvline(
            level, color="0.4", linestyle=":", label=f"Gaussian-noise images (FID {level:.2f})"
        )
