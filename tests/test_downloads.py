"""Download failures are one message (URL, destination, checksum, what to do offline), and a file
placed by hand under resources/manual/ is verified and used, and a download is renamed into place
only when its checksum matches, and verified again each time it is imported. No network: the
URLs point at a closed local port or a local file."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from test_official import _diffusers_ddpm_folder, _edm_pickle

from ddae.datasets.registry import DATASETS, download_path
from ddae.downloads import ChecksumError, DownloadError, download_verified, placed_path
from ddae.official.importers import import_official
from ddae.official.sources import SOURCES, download_official
from ddae.official.sources import download_path as official_download_path

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def download(kind: str, dest: str, url: str, checksum: str) -> None:
    if kind in ("tiny_imagenet", "inception"):
        download_verified(url, dest, checksum, timeout_s=5)
    else:
        download_official("edm", dest, url=url, checksum=checksum, timeout_s=5)


CASES = [
    ("tiny_imagenet", "resources/downloads/tiny_imagenet/tiny-imagenet-200.zip", "md5"),
    ("inception", "resources/downloads/inception/inception-2015-12-05.pt", "sha256"),
    ("official", "resources/downloads/official/edm-cifar10-32x32-uncond-vp.pkl", "sha256"),
]


@pytest.mark.parametrize(("kind", "dest", "algorithm"), CASES)
def test_unreachable_url_names_url_destination_and_checksum(workdir, kind, dest, algorithm):
    checksum = hashlib.new(algorithm, b"x").hexdigest()
    url = UNREACHABLE + Path(dest).name
    with pytest.raises(DownloadError) as error:
        download(kind, dest, url, checksum)
    message = str(error.value)
    assert f"download failed: {url}" in message
    assert f"needed at {dest}" in message
    assert checksum in message
    manual = "resources/manual/" + dest.removeprefix("resources/downloads/")
    assert f"copy the file to {manual}" in message
    assert "verified against that checksum and used" in message
    assert "Traceback" not in message and not Path(dest).exists()
    assert error.value.__cause__ is None and error.value.__suppress_context__


@pytest.mark.parametrize(("kind", "dest", "algorithm"), CASES)
def test_a_placed_file_is_verified_and_used(workdir, kind, dest, algorithm):
    content = b"weights placed by hand"
    placed = placed_path(dest)
    placed.parent.mkdir(parents=True)
    placed.write_bytes(content)
    with pytest.raises(Exception, match="expected"):  # a wrong checksum: nothing is written
        download(kind, dest, UNREACHABLE + "x", hashlib.new(algorithm, b"other").hexdigest())
    assert not Path(dest).exists()
    download(kind, dest, UNREACHABLE + "x", hashlib.new(algorithm, content).hexdigest())
    assert Path(dest).read_bytes() == content


def test_dataset_download_failure_says_where_the_archive_goes(workdir):
    # the registered URL is never reached: the same download at an unreachable URL
    cifar10 = DATASETS["cifar10"].download
    dest = download_path("cifar10")
    assert dest == "resources/downloads/cifar10/cifar-10-python.tar.gz"
    with pytest.raises(DownloadError) as error:
        download_verified(UNREACHABLE + cifar10.file, dest, cifar10.checksum, timeout_s=5)
    message = str(error.value)
    assert dest in message and "c58f30108f718f92721af3b95e74349a" in message
    assert "resources/manual/cifar10/cifar-10-python.tar.gz" in message


def test_download_verifies_checksum_and_leaves_nothing_when_wrong(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(np.random.default_rng(7).bytes(3_000_000))
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    target = tmp_path / "out" / "inception-2015-12-05.pt"
    assert download_verified(source.as_uri(), target, sha256, chunk_size=1 << 16) == sha256
    assert target.read_bytes() == source.read_bytes()
    target.unlink()
    download_verified(source.as_uri(), target, md5.upper())
    assert target.read_bytes() == source.read_bytes()
    target.unlink()
    message = f"{source.as_uri()}: downloaded sha256 is {sha256}, expected {'0' * 64}; {target}"
    with pytest.raises(ChecksumError, match=message):
        download_verified(source.as_uri(), target, "0" * 64)
    assert list(target.parent.iterdir()) == []  # no partial or temporary file
    with pytest.raises(ChecksumError, match="hex md5"):
        download_verified(source.as_uri(), target, "not-a-digest")
    assert download_verified(source.as_uri(), target, None) == sha256  # none published: kept


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["edm", "ddpm"])
def test_an_official_download_changed_on_disk_fails_its_import(workdir, monkeypatch, kind):
    # the fixture stands for the published file: its checksum is pinned as the published one
    dest = Path(official_download_path(kind))
    if kind == "edm":
        dest.parent.mkdir(parents=True)
        _edm_pickle(dest, workdir / "marker")
        weights = dest
    else:
        _diffusers_ddpm_folder(dest)
        weights = dest / "diffusion_pytorch_model.safetensors"
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    pinned = {"checksum": good} if kind == "edm" else {"files": {weights.name: good}}
    monkeypatch.setitem(SOURCES, kind, dataclasses.replace(SOURCES[kind], **pinned))
    import_official(kind, dest, workdir / "ok.pt")

    _flip_byte(weights, weights.stat().st_size // 2)  # inside the weights: still readable
    bad = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as error:
        import_official(kind, dest, workdir / "bad.pt")
    message = str(error.value)
    assert message.startswith(f"{weights}: sha256 is {bad}, but the published checksum is {good}")
    assert "Delete it and run again to download it afresh" in message
    assert not (workdir / "bad.pt").exists()
