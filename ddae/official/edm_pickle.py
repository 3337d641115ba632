"""Read EDM's network pickles without running the code inside them (paper Appendix A: the
CIFAR-10 EDM checkpoint ``edm-cifar10-32x32-uncond-vp.pkl`` behind Tables 2-4 and Figure 5).

EDM (Karras et al. 2022) saves ``{"ema": net, "loss_fn": ..., "augment_pipe": ...,
"dataset_kwargs": {...}}`` with plain `pickle`. Every EDM class is a
``torch_utils.persistence.persistent_class``: its ``__reduce__`` stores a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` is
``{"type": "class", "version": 6, "module_src": <source of the defining module>,
"class_name": ..., "state": <the instance __dict__>}``; EDM's loader ``exec``s ``module_src``.

`EDMUnpickler` is a `pickle.Unpickler` whose ``find_class`` resolves only a short allow-list
(`ALLOWED_GLOBALS`) and refuses everything else with `UnsafePickleError` naming the global as
``module.name``. The persistence hook maps to `PersistentObject`, a record that keeps class name,
``_init_kwargs`` and state and never looks at ``module_src``; ``torch.nn.ModuleDict`` maps to
`ModuleRecord`; tensor storages are read by ``torch.load(..., weights_only=True)``; NumPy scalars
(EDM stores ``np.sqrt(0.5)`` skip scales) are rebuilt from their bytes by `_numpy_scalar`.
`module_state_dict` then walks the records into a ``state_dict`` with EDM's parameter names.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (named in the message)."""


class PersistentObject:
    """What EDM's ``_reconstruct_persistent_obj(meta)`` would have built, as inert data."""

    def __init__(self, meta: Mapping[str, Any]) -> None:
        if not isinstance(meta, Mapping):
            raise pickle.UnpicklingError("persistent object metadata is not a mapping")
        if meta.get("type") != "class":
            raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
        self.class_name: str = str(meta.get("class_name"))
        self.version = meta.get("version")
        state = meta.get("state")
        self.state: dict[str, Any] = dict(state) if isinstance(state, Mapping) else {}
        # module_src is deliberately dropped unread: nothing embedded in the pickle is executed

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


class ModuleRecord:
    """Inert stand-in for a ``torch.nn.ModuleDict`` (or other allowed container) instance."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["state"] = {}

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = dict(state) if isinstance(state, Mapping) else {}


def _reconstruct_stub(meta: Mapping[str, Any]) -> PersistentObject:
    return PersistentObject(meta)


def _load_storage_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` with the weights-only unpickler."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    """``numpy.core.multiarray.scalar`` for numeric dtypes only: the value read from its bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} is not allowed")
    if not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar without byte payload is not allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(name, str):
        raise UnsafePickleError(f"numpy dtype {name!r} is not allowed")
    return np.dtype(name, align, copy)


# (module, name) -> what it resolves to. Anything else is refused.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_stub,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch.nn.modules.container", "ModuleDict"): ModuleRecord,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


class EDMUnpickler(pickle.Unpickler):
    """Allow-list unpickler: only `ALLOWED_GLOBALS` resolve; nothing embedded is executed."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing global {module}.{name}: not on the EDM pickle allow-list "
                f"({', '.join(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)})"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r}")


def load_edm_pickle(source: str | Path | BinaryIO) -> dict[str, Any]:
    """The top-level dict of an EDM pickle, with networks as `PersistentObject` records."""
    if isinstance(source, (str, Path)):
        with Path(source).open("rb") as handle:
            data = EDMUnpickler(handle).load()
    else:
        data = EDMUnpickler(source).load()
    if not isinstance(data, dict):
        raise pickle.UnpicklingError(f"expected a dict at the top level, got {type(data).__name__}")
    return data


MAX_MODULES = 10_000  # EDM's CIFAR-10 SongUNet has a few hundred submodules
MAX_DEPTH = 32  # and nests them about 6 deep


def module_state_dict(
    record: PersistentObject | ModuleRecord,
    prefix: str = "",
    max_modules: int = MAX_MODULES,
    max_depth: int = MAX_DEPTH,
) -> dict[str, Any]:
    """``state_dict()`` of the module described by ``record`` (persistent buffers only).

    The module tree is walked once, iteratively, with a visited set: a pickle whose submodules
    are shared (a DAG that would expand exponentially into a tree) or cyclic is refused, as is
    one with more than ``max_modules`` modules or nested deeper than ``max_depth``; each such
    refusal is an `UnsafePickleError` naming the module path.
    """
    result: dict[str, Any] = {}
    seen: set[int] = set()
    stack: list[tuple[PersistentObject | ModuleRecord, str, int]] = [(record, prefix, 0)]
    while stack:
        node, path, depth = stack.pop()
        if id(node) in seen:
            raise UnsafePickleError(f"{path or '<root>'}: submodule shared or cyclic; refused")
        seen.add(id(node))
        if len(seen) > max_modules or depth > max_depth:
            raise UnsafePickleError(
                f"{path}: more than {max_modules} modules or deeper than {max_depth}; refused"
            )
        state = node.state
        for name, value in (state.get("_parameters") or {}).items():
            if value is not None:
                result[path + name] = value.detach() if isinstance(value, torch.Tensor) else value
        non_persistent = set(state.get("_non_persistent_buffers_set") or ())
        for name, value in (state.get("_buffers") or {}).items():
            if value is not None and name not in non_persistent:
                result[path + name] = value
        children = []
        for name, child in (state.get("_modules") or {}).items():
            if child is None:
                continue
            if not isinstance(child, (PersistentObject, ModuleRecord)):
                raise pickle.UnpicklingError(
                    f"{path}{name}: unexpected submodule type {type(child).__name__}"
                )
            children.append((child, f"{path}{name}.", depth + 1))
        stack.extend(reversed(children))  # depth first, in the modules' order
    return result


def submodule(record: PersistentObject, name: str) -> PersistentObject:
    """The child module ``name`` of a persistent module record."""
    child = (record.state.get("_modules") or {}).get(name)
    if not isinstance(child, PersistentObject):
        raise pickle.UnpicklingError(f"{record.class_name} has no persistent submodule {name!r}")
    return child
