"""Hostile official checkpoints cannot exhaust memory (issue 15, item 4): the file's network
spec is compared with the expected one and bounded by the file's own size before anything is
built, and the EDM module tree is walked once with a visited set and a budget."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from conftest import TINY_DDPMPP, TINY_UNET
from test_official import _diffusers_ddpm_folder, _edm_pickle, _stand_in_persistence

from ddae.official import OfficialImportError
from ddae.official.edm_pickle import UnsafePickleError, load_edm_pickle, module_state_dict
from ddae.official.importers import import_official
from ddae.official.sources import SOURCES


def _shared_module_bomb(path: Path, depth: int) -> None:
    """An EDM-style pickle whose modules each hold the next one twice: `depth` objects in the
    file, 2^depth paths for a naive tree walk."""
    with _stand_in_persistence() as persistence:

        class Node:
            def __init__(self, child):
                self.child = child

            def __reduce__(self):
                modules = {} if self.child is None else {"a": self.child, "b": self.child}
                meta = {"type": "class", "version": 6, "module_src": "", "class_name": "SongUNet"}
                meta["state"] = {"_modules": modules, "_parameters": {}, "_buffers": {}}
                return (persistence._reconstruct_persistent_obj, (meta,))

        node = None
        for _ in range(depth):
            node = Node(node)
        path.write_bytes(pickle.dumps({"ema": node}))


def test_shared_submodules_are_refused_at_once(tmp_path):
    path = tmp_path / "bomb.pkl"
    _shared_module_bomb(path, depth=18)
    assert path.stat().st_size < 5000
    with pytest.raises(UnsafePickleError, match="shared or cyclic"):
        module_state_dict(load_edm_pickle(path)["ema"])


def test_module_budget_is_enforced(tmp_path):
    path = tmp_path / "edm.pkl"
    _edm_pickle(path, tmp_path / "marker")
    model = load_edm_pickle(path)["ema"].state["_modules"]["model"]
    assert len(module_state_dict(model)) > 10
    with pytest.raises(UnsafePickleError, match="more than 5 modules"):
        module_state_dict(model, max_modules=5)


def test_forged_edm_spec_is_compared_before_building(tmp_path, monkeypatch):
    path = tmp_path / "edm.pkl"
    _edm_pickle(path, tmp_path / "marker", claimed={"model_channels": 4096})
    built = []
    for module in ("ddae.official.edm", "ddae.official.conversion"):
        monkeypatch.setattr(f"{module}.build_network", lambda *a, **k: built.append(a))
    expected = {"network": TINY_DDPMPP, "framework": {"kind": "edm"}}
    with pytest.raises(OfficialImportError, match=r"network\.model_channels .* 4096"):
        import_official("edm", path, tmp_path / "out.pt", expected=expected)
    assert built == []  # nothing was built before the comparison


def test_forged_edm_spec_without_expectation_is_bounded_by_the_file(tmp_path):
    path = tmp_path / "edm.pkl"
    _edm_pickle(path, tmp_path / "marker", claimed={"model_channels": 4096})
    with pytest.raises(OfficialImportError, match="refusing to build it"):
        import_official("edm", path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_forged_diffusers_config_is_refused_before_building(tmp_path):
    folder = tmp_path / "ddpm"
    _diffusers_ddpm_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"] = [512, 1024]  # ~60M parameters claimed, ~1M in the file
    (folder / "config.json").write_text(json.dumps(config))
    expected = {"network": TINY_UNET, "framework": {"kind": "ddpm"}}
    with pytest.raises(OfficialImportError, match=r"network\.base_channels .* 512"):
        import_official("ddpm", folder, tmp_path / "out.pt", expected=expected)
    with pytest.raises(OfficialImportError, match="refusing to build it"):
        import_official("ddpm", folder, tmp_path / "out.pt")


def test_edm_download_is_pinned():
    assert SOURCES["edm"].checksum and len(SOURCES["edm"].checksum) == 64
