"""Hostile official checkpoints cannot exhaust memory (issues 15 and 23, item 4): the file's
network spec is compared with the expected one and bounded by the file's own size before
anything is built, the EDM module tree is walked once with a visited set and a budget, and the
expanded size of everything unpickled is bounded before anything walks it (a shared-list DAG of
a few hundred bytes would otherwise expand to 2^40 nodes)."""

from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_DDPMPP, TINY_UNET
from test_official import _diffusers_ddpm_folder, _edm_pickle, _stand_in_persistence

from ddae.official import OfficialImportError
from ddae.official.bounds import (
    PICKLE_LIMITS,
    DataLimitError,
    DataLimits,
    check_expanded_size,
)
from ddae.official.conversion import plain
from ddae.official.edm_pickle import (
    UnsafePickleError,
    load_edm_pickle,
    module_state_dict,
    record_children,
)
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
    _shared_module_bomb(path, depth=8)  # 2^8 module paths: within the pickle's size limits
    with pytest.raises(UnsafePickleError, match="shared or cyclic"):
        module_state_dict(load_edm_pickle(path)["ema"])
    _shared_module_bomb(path, depth=18)  # 2^18 module paths: refused as it is read
    assert path.stat().st_size < 5000
    with pytest.raises(DataLimitError, match=rf"{path}: .* more than 1,000,000 nodes"):
        load_edm_pickle(path)


def _persistent_pickle(path: Path, ema_kwargs: dict, model_kwargs: dict, extra: dict) -> None:
    """An EDM-format pickle ``{"ema": EDMPrecond(model=SongUNet), **extra}`` holding only the
    given ``_init_kwargs``; the pickler's memo writes an object referenced twice once."""
    with _stand_in_persistence() as persistence:

        class Record:
            def __init__(self, class_name, state):
                self.meta = {"type": "class", "version": 6, "module_src": ""}
                self.meta.update(class_name=class_name, state=state)

            def __reduce__(self):
                return (persistence._reconstruct_persistent_obj, (self.meta,))

        model = Record("SongUNet", {"_init_kwargs": model_kwargs, "_modules": {}})
        precond = Record("EDMPrecond", {"_init_kwargs": ema_kwargs, "_modules": {"model": model}})
        path.write_bytes(pickle.dumps({"ema": precond, **extra}, protocol=4))


def _shared_dag(depth: int, leaf: object, container: type = list) -> object:
    """``container`` holding the same ``container`` twice, ``depth`` levels deep: ``depth``
    objects, 2^depth leaves expanded."""
    node = leaf
    for _ in range(depth):
        node = container((node, node))
    return node


class _UnhashedItems:
    """Pickles as an OrderedDict holding ``items`` (SETITEMS, or the constructor's argument),
    without hashing their keys here as a dict literal would."""

    def __init__(self, items: list[tuple], as_argument: bool) -> None:
        self.items, self.as_argument = items, as_argument

    def __reduce__(self):
        if self.as_argument:
            return (collections.OrderedDict, (self.items,))
        return (collections.OrderedDict, (), None, None, iter(self.items))


# Run in a child process whose address space may grow by 1 GiB at most past its imports (torch
# alone maps more than that), under a timeout, so that a regression cannot take the machine down.
_BOUNDED_IMPORT = """
import json, resource, sys
from ddae.official.importers import import_official
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30),) * 2)
for path in sys.argv[2:]:
    try:
        import_official("edm", path, sys.argv[1])
        print(json.dumps(["no error", ""]))
    except BaseException as error:
        print(json.dumps([type(error).__name__, str(error)]))
"""


def _import_within_1gib(dest: Path, *paths: Path) -> list[tuple[str, str]]:
    """(error type, message) of importing each of ``paths`` in a child process (see above)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    command = [sys.executable, "-c", _BOUNDED_IMPORT, str(dest), *map(str, paths)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        pytest.fail(f"importing {paths} took over 120 s")
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(paths), f"exit {done.returncode}: {done.stderr[-2000:]}"
    return [tuple(json.loads(line)) for line in lines]


def test_shared_list_dag_in_init_kwargs_is_refused_within_1gib(tmp_path):
    path, dest = tmp_path / "edm.pkl", tmp_path / "out.pt"
    kwargs = dict(img_resolution=32, in_channels=3, out_channels=3)
    _persistent_pickle(
        path, {"model_type": "SongUNet"}, {**kwargs, "channel_mult": _shared_dag(40, 2)}, {}
    )
    assert path.stat().st_size < 1024
    [(kind, message)] = _import_within_1gib(dest, path)
    assert kind == "DataLimitError", (kind, message[:500])
    assert message.startswith(f"{path}: ['ema']<EDMPrecond>['_modules']['model']<SongUNet>")
    assert "['_init_kwargs']['channel_mult'][0][0]" in message
    assert "expands to more than 1,000,000 nodes (the limit;" in message
    assert not dest.exists()


def test_nested_tuple_key_is_refused_before_it_is_hashed(tmp_path):
    # hashing a tuple hashes its whole expansion: 2^40 steps, hours, for a file under 1 KB
    paths = [tmp_path / "setitems.pkl", tmp_path / "argument.pkl"]
    for path in paths:
        items = _UnhashedItems([(_shared_dag(40, 0, tuple), 1)], "argument" in path.name)
        _persistent_pickle(path, {"model_type": "SongUNet"}, {}, {"dataset_kwargs": items})
        assert path.stat().st_size < 1024
    results = _import_within_1gib(tmp_path / "out.pt", *paths)
    for path, (kind, message) in zip(paths, results, strict=True):
        assert kind == "DataLimitError", (path, kind, message[:500])
        assert message.startswith(f"{path}: ")
        assert "nests deeper than 4 levels (the limit)" in message


def test_expanded_size_counts_shared_values_per_reference():
    pair = [1, "ab"]
    assert check_expanded_size([pair, pair], "x", PICKLE_LIMITS) == (7, 4, 3)
    assert check_expanded_size({"key": pair}, "x", PICKLE_LIMITS) == (5, 5, 3)
    small = DataLimits(nodes=6, text=100, depth=10)
    with pytest.raises(DataLimitError, match=r"^where: \[1\] expands to more than 6 nodes"):
        check_expanded_size([0, [pair, pair]], "where", small)
    with pytest.raises(DataLimitError, match="more than 3 characters"):
        check_expanded_size([pair, pair], "x", DataLimits(nodes=100, text=3, depth=10))
    with pytest.raises(DataLimitError, match="nests deeper than 2 levels"):
        check_expanded_size([pair], "x", DataLimits(nodes=100, text=100, depth=2))
    with pytest.raises(DataLimitError, match=r"^x: \[0\] holds more than 6 items"):
        check_expanded_size([list(range(7))], "x", small)  # refused before its items are listed
    cycle: list = [pair]
    cycle.append([cycle])
    with pytest.raises(DataLimitError, match=r"^x: \[1\]\[0\] contains itself"):
        check_expanded_size(cycle, "x", PICKLE_LIMITS)


def test_plain_converts_a_shared_list_once_and_refuses_a_large_expansion():
    pair = (1, 2)
    converted = plain([pair, pair])
    assert converted == [[1, 2], [1, 2]] and converted[0] is converted[1]
    with pytest.raises(DataLimitError, match="channel_mult: .* more than 10,000 nodes"):
        plain(_shared_dag(14, 2), "channel_mult")  # 2^14 leaves: refused before converting


def test_paper_shaped_edm_pickle_is_well_within_the_limits(tmp_path):
    # EDM's CIFAR-10 SongUNet (DESIGN.md): 32 px, mults 2-2-2, 4 blocks, attention at 16,
    # augment_dim 9; narrow (16 channels): the width changes no count
    spec = {"arch": "ddpmpp", "resolution": 32, "model_channels": 16, "channel_mult": [2, 2, 2]}
    spec |= {"num_blocks": 4, "attn_resolutions": [16], "dropout": 0.13, "augment_dim": 9}
    path = tmp_path / "edm.pkl"
    _edm_pickle(path, tmp_path / "marker", spec=spec)
    data = load_edm_pickle(path)
    nodes, text, depth = check_expanded_size(data, "edm", PICKLE_LIMITS, record_children)
    assert 10_000 < nodes < PICKLE_LIMITS.nodes / 30
    assert text < PICKLE_LIMITS.text / 30 and depth < PICKLE_LIMITS.depth / 3
    assert len(module_state_dict(data["ema"])) > 400


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
