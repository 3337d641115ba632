"""Where the official checkpoints of paper Appendix A are published, and their download.

`SOURCES` names, for each official kind (``ddpm``, ``edm``, ``dit``, ``vae``), its URL, the
published checksum and the file or folder name it is saved under in `OFFICIAL_DOWNLOADS`; the
Snakemake rules take the names from here (`download_path`). `download_official` (the download
localrules) fetches each file with `ddae.downloads.download_verified`: through a temporary file,
renamed into place only when the published checksum matches; where no checksum is published the
sha256 is logged and recorded at import time instead. `verify_official` checks a download again
when it is imported (a file on disk can change after its download was verified). Pure Python:
no torch import (the Snakefile reads this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ddae.downloads import download_verified, verify_file
from ddae.official import OfficialImportError

OFFICIAL_DOWNLOADS = "resources/downloads/official"


@dataclass(frozen=True)
class OfficialSource:
    """Where an official checkpoint lives: one file, or a folder of files under a base URL."""

    name: str  # the file or folder it is saved as, under resources/downloads/official/
    url: str  # file URL, or base URL ending in "/" for folder sources
    files: dict[str, str | None] = field(default_factory=dict)  # folder: name -> checksum
    checksum: str | None = None  # single file: hex md5 or sha256 (None: none published)
    reference: str = ""  # where the checksum was published

    def pinned_at(self, path: str | Path) -> dict[Path, str]:
        """{file: published checksum} for this download stored at ``path``: the file itself, or
        each file of a folder that has a checksum. Empty unless ``path`` carries this
        download's name (``self.name``): a file of another name is not the published one."""
        path = Path(path)
        if path.name != self.name:
            return {}
        if self.files:
            return {path / name: checksum for name, checksum in self.files.items() if checksum}
        return {path: self.checksum} if self.checksum else {}


SOURCES: dict[str, OfficialSource] = {
    "ddpm": OfficialSource(
        name="ddpm-cifar10-32",
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
        name="edm-cifar10-32x32-uncond-vp.pkl",
        url="https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",
        # NVIDIA publishes no checksum; this sha256 is the one independent public reproductions
        # (consistency-training launch scripts and notes that reuse this file) verify against
        checksum="4d5dcc1f1d0d41c8934ad21626eeddbdc0460182becf9fc059a0631b1eedb4da",
        reference="third-party records of the NVIDIA file (no official checksum exists)",
    ),
    "dit": OfficialSource(
        name="DiT-XL-2-256x256.pt",
        url="https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
        checksum=None,  # facebookresearch/DiT download.py publishes no checksum
    ),
    "vae": OfficialSource(
        name="sd-vae-ft-mse",
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


def download_path(kind: str) -> str:
    """Where the official ``kind`` is downloaded to (a file, or a folder for diffusers)."""
    return f"{OFFICIAL_DOWNLOADS}/{SOURCES[kind].name}"


def kind_of(name: str) -> str:
    """The official kind whose download is saved as ``name`` (a file or folder name)."""
    kinds = [kind for kind, source in SOURCES.items() if source.name == name]
    if not kinds:
        raise OfficialImportError(f"no official download is called {name!r}")
    return kinds[0]


def verify_official(kind: str, path: str | Path) -> None:
    """Check the official ``kind`` stored at ``path`` against its published checksums
    (`OfficialSource.pinned_at`) before it is read; `ddae.downloads.ChecksumError` names the
    file and both digests. Run at every import: a download verified once can change on disk."""
    source = SOURCES[kind]
    for file, checksum in source.pinned_at(path).items():
        verify_file(file, checksum, source.reference)


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
            digests[name] = download_verified(base + name, dest / name, expected, timeout_s)
        return digests
    expected = checksum if (checksum or custom_url) else source.checksum
    digest = download_verified(url or source.url, dest, expected, timeout_s)
    return {dest.name: digest}
