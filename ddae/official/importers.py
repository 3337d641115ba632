"""`import_official`: the Snakemake rule ``import_official``'s entry (paper Appendix A). It reads
the official ``kind`` with its format's reader (`IMPORTERS`: `ddae.official.ddpm`,
`ddae.official.edm`, `ddae.official.dit`) and writes a ddae checkpoint
(`ddae.official.conversion.write_checkpoint`). A published download is verified against its
checksum first (`ddae.official.sources.verify_official`), every time it is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ddae.official import OfficialImportError
from ddae.official.conversion import Converted, write_checkpoint
from ddae.official.ddpm import read_ddpm_diffusers
from ddae.official.dit import read_dit
from ddae.official.edm import read_edm_pickle
from ddae.official.sources import verify_official

# official kind -> reader of its published format (each returns a `Converted`)
IMPORTERS: dict[str, Callable[..., Converted]] = {
    "ddpm": read_ddpm_diffusers,
    "edm": read_edm_pickle,
    "dit": read_dit,
}


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
    nothing is written. A ``source`` under its published name (``SOURCES[kind].name``) is the
    published download: it is checked against the published checksums before it is read
    (`verify_official`; `ddae.downloads.ChecksumError` names the file and both digests).
    """
    if kind not in IMPORTERS:
        raise OfficialImportError(
            f"unknown official import {kind!r} (choose from {sorted(IMPORTERS)})"
        )
    if network is not None and kind != "dit":
        raise OfficialImportError(f"network: only the dit import takes a network spec, not {kind}")
    verify_official(kind, source)
    extra = {"network": network} if kind == "dit" else {}
    converted = IMPORTERS[kind](Path(source), url=url, expected=expected, **extra)
    return write_checkpoint(converted, dest, epoch, expected)
