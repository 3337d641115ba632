"""Checkpoints prove their integrity and are readable by the lab (issue 15, item 3)."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from conftest import TINY_UNET

from ddae.checkpoints import (
    CheckpointError,
    content_digest,
    load_checkpoint,
    load_network,
    save_checkpoint,
)
from ddae.networks import build_network

RUN = {"network": TINY_UNET, "framework": {"kind": "ddpm", "timesteps": 100}}


def write(path):
    torch.manual_seed(0)
    state = build_network(TINY_UNET).state_dict()
    marker = torch.arange(4096, dtype=torch.float32) * 0.25  # bytes we can find in the file
    save_checkpoint({"run": RUN, "model": state, "ema": state, "marker": marker}, path)
    return marker


def test_a_flipped_byte_in_tensor_data_is_detected(tmp_path):
    path = tmp_path / "epoch1.pt"
    marker = write(path)
    load_checkpoint(path)  # intact: loads
    data = bytearray(path.read_bytes())
    at = data.find(marker.numpy().tobytes())
    assert at > 0
    data[at + 1000] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}: content hash mismatch"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_network(path)


def test_digest_covers_every_value_and_ignores_key_order():
    a = {"x": torch.ones(3), "y": [1, 2.5, (3, "s")], "z": {0: None}}
    b = {"z": {0: None}, "y": [1, 2.5, (3, "s")], "x": torch.ones(3)}
    assert content_digest(a) == content_digest(b)
    assert content_digest(a) != content_digest({**a, "x": torch.ones(3, dtype=torch.float64)})
    assert content_digest(a) != content_digest({**a, "y": [1, 2.5, (3, "t")]})
    assert content_digest(a) != content_digest({**a, "x": torch.ones(1, 3)})


def test_checkpoints_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write(tmp_path / "e.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "e.pt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["e.pt"]  # no temporary left behind
