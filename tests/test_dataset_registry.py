"""The dataset registry (ddae.datasets.registry): a new dataset is a reader module, one registry
entry and its config block, and the schema, the download rule and the conversion follow.

The toy dataset is added to a copy of the workflow and package; its download is a local file
(file:// URL, never the network) and its reader makes a few images from the file's bytes.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from ddae.config_messages import load_schema, schema_message
from ddae.datasets.format import ImageDataset, split_path
from ddae.datasets.registry import DATASETS, DatasetEntry, config_schema, downloaded_sources
from ddae.downloads import Download

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"

TOY_READER = '''"""A toy dataset (tests only): 8x8 images from the bytes of one downloaded file."""

from pathlib import Path

import numpy as np
import torch

from ddae.datasets.format import ImageDataset


def read_toy(path: Path) -> dict[str, ImageDataset]:
    pixels = np.frombuffer(path.read_bytes(), dtype=np.uint8)[: 6 * 3 * 8 * 8]
    images = torch.from_numpy(pixels.reshape(6, 3, 8, 8).copy())
    labels = torch.arange(6) % 2
    split = {"train": slice(0, 4), "test": slice(4, 6)}
    return {k: ImageDataset(images[s], labels[s], ["even", "odd"]) for k, s in split.items()}
'''


def toy_entry(source: Path) -> str:
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    return f"""

register(
    DatasetEntry(
        name="toy",
        reader="ddae.datasets.toy:read_toy",
        classes=2,
        resolution=8,
        download=Download(url={source.as_uri()!r}, checksum={md5!r}, file="toy.bin"),
    )
)
"""


def test_the_schema_lists_exactly_the_registered_datasets(monkeypatch):
    schema = load_schema(SCHEMA_PATH)
    assert set(schema["properties"]["datasets"]["properties"]) == set(DATASETS)
    config = {"datasets": {"toy": {"resolution": 8}}}
    message = schema_message(config, schema, "")
    assert "unknown key 'toy' at datasets" in message
    assert "allowed keys there: cifar10, digits, tiny_imagenet" in message
    toy = DatasetEntry("toy", "ddae.datasets.toy:read_toy", 2, 8, Download("file:///x", None, "x"))
    monkeypatch.setitem(DATASETS, "toy", toy)
    raw = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema_message(config, config_schema(raw), "") is None
    assert downloaded_sources()["toy"] == "resources/downloads/toy/x"


def test_a_toy_dataset_is_added_through_the_registry(tmp_path):
    # the repository's workflow and package, copied; the toy dataset touches only files listed
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake")
    repo.mkdir()
    shutil.copy(REPO / "Snakefile", repo / "Snakefile")
    for folder in ("workflow", "ddae", "profiles", "envs"):
        shutil.copytree(REPO / folder, repo / folder, ignore=ignore)
    source = tmp_path / "published" / "toy.bin"
    source.parent.mkdir()
    source.write_bytes(np.random.default_rng(3).integers(0, 256, 1200, np.uint8).tobytes())

    (repo / "ddae" / "datasets" / "toy.py").write_text(TOY_READER)  # 1: the reader
    with (repo / "ddae" / "datasets" / "registry.py").open("a") as registry:
        registry.write(toy_entry(source))  # 2: its registry entry
    workdir = tmp_path / "work"
    workdir.mkdir()  # 3: its config block
    (workdir / "config.yaml").write_text(yaml.safe_dump({"datasets": {"toy": {"resolution": 8}}}))

    changed = []
    for folder in ("workflow", "ddae"):
        for path in (repo / folder).rglob("*"):
            original = REPO / path.relative_to(repo)
            if path.is_file() and not (original.is_file() and filecmp.cmp(path, original, False)):
                changed.append(path.relative_to(repo).as_posix())
    assert sorted(changed) == ["ddae/datasets/registry.py", "ddae/datasets/toy.py"]

    def snakemake(*args: str) -> str:
        command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d"]
        env = {**os.environ, "PYTHONPATH": str(repo)}
        result = subprocess.run(
            [*command, str(workdir), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=repo,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    targets = ["resources/data/toy/train.npz", "resources/data/toy/test.npz"]
    plan = snakemake("-n", *targets)
    assert "rule download_dataset:" in plan and "rule prepare_dataset:" in plan
    assert "output: resources/downloads/toy/toy.bin" in plan
    snakemake("--cores", "1", *targets)
    assert (workdir / "resources/downloads/toy/toy.bin").read_bytes() == source.read_bytes()
    train = ImageDataset.load(split_path(workdir / "resources/data/toy", "train"))
    test = ImageDataset.load(split_path(workdir / "resources/data/toy", "test"))
    pixels = np.frombuffer(source.read_bytes(), np.uint8)[:1152].reshape(6, 3, 8, 8)
    assert np.array_equal(train.images.numpy(), pixels[:4])
    assert np.array_equal(test.images.numpy(), pixels[4:])
    assert train.labels.tolist() == [0, 1, 0, 1] and test.classes == ["even", "odd"]
