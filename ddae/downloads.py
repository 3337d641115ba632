"""Every download of the pipeline: where it reads from, and the one verified copy into place.

The download localrules (datasets, clean-fid's Inception weights for the FID of paper Sec. 4,
the official checkpoints of paper Appendix A) all go through `download_verified`: it opens the
source with `open_source`, streams it into a temporary file beside the destination while
hashing, and renames it into place only when the checksum matches, so a file placed by hand is
checked against the same checksum as a downloaded one. Each download is described once, by a
`Download` (URL, checksum, file name) that lives in `ddae` (this module's `INCEPTION`,
`ddae.datasets.registry`, `ddae.official.sources`); the rules read it from there. A placed
copy lives under ``resources/manual/`` at the path the download would have under
``resources/downloads/`` (e.g. ``resources/manual/tiny_imagenet/tiny-imagenet-200.zip``). When
the network fails, the error is one `DownloadError` message naming the URL, where the file must
go and its checksum. A file already on disk is checked again where it is read (`verify_file`):
a download renamed into place once can still change afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ddae.result_writers import atomic_output

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


class ChecksumError(ValueError):
    """A checksum is malformed, or a downloaded file does not match it (nothing was written)."""


@dataclass(frozen=True)
class Download:
    """One file to download: its URL, published checksum (hex md5 or sha256, optionally
    prefixed ``md5:``/``sha256:``; None where none is published) and the file name it is saved
    under; ``reference`` says where the checksum was published."""

    url: str
    checksum: str | None
    file: str
    reference: str = ""


# clean-fid's Inception network (the paper's FID, Sec. 4), the name clean-fid's InceptionV3W
# loads; sha256 of that file (95,607,719 bytes) as recorded by crowsonkb/k-diffusion
# (k_diffusion/evaluation.py, `InceptionV3FeatureExtractor`) and several independent projects.
INCEPTION = Download(
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt",
    checksum="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
    file="inception-2015-12-05.pt",
    reference="crowsonkb/k-diffusion k_diffusion/evaluation.py",
)


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


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"<hex>"`` or ``"sha256:<hex>"`` / ``"md5:<hex>"`` → (algorithm, lower-case hex); a bare
    digest is md5 when 32 characters long, sha256 when 64."""
    text = checksum.strip().lower() if isinstance(checksum, str) else ""
    if ":" in text:
        algorithm, _, digest = text.partition(":")
    else:
        algorithm, digest = ("md5" if len(text) == 32 else "sha256"), text
    lengths = {"md5": 32, "sha256": 64}
    if algorithm not in lengths or not re.fullmatch(rf"[0-9a-f]{{{lengths[algorithm]}}}", digest):
        raise ChecksumError(
            f"checksum must be a hex md5 (32) or sha256 (64) digest, got {checksum!r}"
        )
    return algorithm, digest


def file_digest(path: str | Path, algorithm: str) -> str:
    """The hex ``algorithm`` (md5, sha256) digest of the file at ``path``."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def verify_file(path: str | Path, checksum: str, reference: str = "") -> None:
    """Check a file already on disk against its published ``checksum`` (see `parse_checksum`),
    hashing it in chunks. `ChecksumError` names the file, both digests and ``reference`` (where
    the checksum was published)."""
    algorithm, expected = parse_checksum(checksum)
    found = file_digest(path, algorithm)
    if found != expected:
        published = f" ({reference})" if reference else ""
        raise ChecksumError(
            f"{path}: {algorithm} is {found}, but the published checksum is {expected}"
            f"{published}; the file changed after it was downloaded or placed. Delete it and "
            f"run again to download it afresh."
        )
    log.info("%s: %s %s verified", path, algorithm, expected)


def file_md5(path: str | Path) -> str:
    return file_digest(path, "md5")


def file_sha256(path: str | Path) -> str:
    return file_digest(path, "sha256")


def download_verified(
    url: str,
    dest: str | Path,
    checksum: str | None,
    timeout_s: float = 60.0,
    chunk_size: int = 1 << 20,
) -> str:
    """Stream ``url`` (or a copy placed by hand, `open_source`) to ``dest`` and return its sha256.

    The bytes go to a temporary file beside ``dest`` while being hashed, and are renamed into
    place only when ``checksum`` (see `parse_checksum`) matches; otherwise `ChecksumError` names
    the URL, both digests and ``dest``, and nothing is left at ``dest``. Without a ``checksum``
    (none published) the file is kept and its sha256 logged.
    """
    dest = Path(dest)
    algorithm, expected = parse_checksum(checksum) if checksum else ("sha256", None)
    digest = hashlib.new(algorithm)
    sha256 = hashlib.sha256()
    expected_text = f"{algorithm} {expected}" if expected else None
    with open_source(url, dest, expected_text, timeout_s) as response, atomic_output(dest) as out:
        while chunk := response.read(chunk_size):
            digest.update(chunk)
            sha256.update(chunk)
            out.write(chunk)
        if expected is not None and digest.hexdigest() != expected:
            raise ChecksumError(
                f"{url}: downloaded {algorithm} is {digest.hexdigest()}, expected {expected}; "
                f"{dest} was not written"
            )
    if expected is None:
        log.warning("%s: no published checksum; downloaded sha256 %s", url, sha256.hexdigest())
    else:
        log.info("downloaded %s to %s (%s %s verified)", url, dest, algorithm, expected)
    return sha256.hexdigest()
