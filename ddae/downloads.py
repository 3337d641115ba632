"""Where every download of the pipeline reads from: the network, or a copy placed by hand.

The download localrules (datasets, clean-fid's Inception weights, the official checkpoints of
paper Appendix A) all open their source through `open_source`. It yields a readable binary
stream that the caller hashes and verifies as it copies, so a file placed by hand is checked
against the same checksum as a downloaded one. A placed copy lives under ``resources/manual/``
at the path the download would have under ``resources/downloads/`` (e.g.
``resources/manual/tiny_imagenet/tiny-imagenet-200.zip``). When the network fails, the error
is one `DownloadError` message naming the URL, where the file must go and its checksum.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

DOWNLOADS = Path("resources/downloads")
MANUAL = Path("resources/manual")
NETWORK_ERRORS = (
    urllib.error.URLError,  # includes HTTPError
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class DownloadError(RuntimeError):
    """A download failed; the message says what to download by hand and where to put it."""


def placed_path(dest: str | Path) -> Path:
    """Where a copy of ``dest`` placed by hand is looked for (``resources/manual/...``)."""
    dest = Path(dest)
    for base in (DOWNLOADS, DOWNLOADS.resolve()):
        if dest.is_relative_to(base):
            return MANUAL / dest.relative_to(base)
    return MANUAL / dest.name


def failure_message(url: str, dest: str | Path, checksum: str | None, error: BaseException) -> str:
    placed = placed_path(dest)
    check = f"its checksum must be {checksum}" if checksum else "no checksum is published for it"
    verified = "verified against that checksum and " if checksum else ""
    return (
        f"download failed: {url}\n"
        f"  reason: {error}\n"
        f"  the file is needed at {dest}; {check}.\n"
        f"  Without network access here: download that URL on another machine "
        f"(e.g. curl -L -o {Path(dest).name} '{url}'), copy the file to {placed} and run "
        f"Snakemake again; a file placed there is {verified}used instead of the download."
    )


@contextmanager
def open_source(
    url: str, dest: str | Path, checksum: str | None, timeout_s: float | None = 60.0
) -> Iterator[BinaryIO]:
    """The bytes of ``url`` destined for ``dest``: a copy placed by hand if there is one, else
    the network. The caller verifies ``checksum`` while copying; a network failure raises
    `DownloadError` (see `failure_message`)."""
    placed = placed_path(dest)
    if placed.is_file():
        log.info("using %s placed by hand instead of downloading %s; verifying it", placed, url)
        with placed.open("rb") as handle:
            yield handle
        return
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            log.info("downloading %s to %s", url, dest)
            yield response
    except NETWORK_ERRORS as error:
        raise DownloadError(failure_message(url, dest, checksum, error)) from None
