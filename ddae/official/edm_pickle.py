"""Read EDM's network pickles without running the code inside them (paper Appendix A: the
CIFAR-10 EDM checkpoint ``edm-cifar10-32x32-uncond-vp.pkl`` behind Tables 2-4 and Figure 5).

EDM (Karras et al. 2022) saves ``{"ema": net, "loss_fn": ..., "augment_pipe": ...,
"dataset_kwargs": {...}}`` with plain `pickle`. Every EDM class is a
``torch_utils.persistence.persistent_class``: its ``__reduce__`` stores a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` is
``{"type": "class", "version": 6, "module_src": <source of the defining module>,
"class_name": ..., "state": <the instance __dict__>}``; EDM's loader ``exec``s ``module_src``.

`EDMUnpickler` is an unpickler whose ``find_class`` resolves only a short allow-list
(`ALLOWED_GLOBALS`) and refuses everything else with `UnsafePickleError` naming the global as
``module.name``. Data that a small file can make expensive is bounded (`ddae.official.bounds`):
every dict key and set member is size-checked before it is hashed (a nested tuple key hashes its
whole expansion), and `load_edm_pickle` checks the expanded size of everything it returns before
any caller walks, compares or prints it (a list holding the same list twice, 40 levels deep, is
under 1 KB on disk and 2^40 nodes expanded).

The persistence hook maps to `PersistentObject`, a record that keeps class name, ``_init_kwargs``
and state and never looks at ``module_src``; ``torch.nn.ModuleDict`` maps to
`ModuleRecord`; tensor storages are read by ``torch.load(..., weights_only=True)``; NumPy scalars
(EDM stores ``np.sqrt(0.5)`` skip scales) are rebuilt from their bytes by `_numpy_scalar`.
`module_state_dict` then walks the records into a ``state_dict`` with EDM's parameter names.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ddae.official.bounds import (
    KEY_LIMITS,
    PICKLE_LIMITS,
    DataLimitError,
    DataLimits,
    Label,
    check_expanded_size,
    default_children,
)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (named in the message)."""


class PersistentObject:
    """What EDM's ``_reconstruct_persistent_obj(meta)`` would have built, as inert data."""

    def __init__(self, meta: Mapping[str, Any]) -> None:
        if not isinstance(meta, Mapping):
            raise pickle.UnpicklingError("persistent object metadata is not a mapping")
        kind, class_name = meta.get("type"), meta.get("class_name")
        if kind != "class":
            found = repr(kind)[:80] if isinstance(kind, str) else type(kind).__name__
            raise pickle.UnpicklingError(f"unsupported persistent object type {found}")
        if not isinstance(class_name, str):
            raise pickle.UnpicklingError(
                f"persistent object class_name is a {type(class_name).__name__}, not a str"
            )
        self.class_name = class_name
        state = meta.get("state")
        self.state: dict[str, Any] = dict(state) if isinstance(state, Mapping) else {}
        # module_src is deliberately dropped unread: nothing embedded in the pickle is executed

    def __setstate__(self, state: Any) -> None:
        # EDM's __reduce__ carries no separate state: a BUILD here would overwrite the record
        raise UnsafePickleError(f"refusing to set the state of persistent {self.class_name}")

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """The ``_init_kwargs`` the module was constructed with (str keys)."""
        kwargs = self.state.get("_init_kwargs") or {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
            raise pickle.UnpicklingError(f"{self.class_name}._init_kwargs is not a str mapping")
        return dict(kwargs)

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


def _ordered_dict(items: Any = ()) -> collections.OrderedDict:
    """``collections.OrderedDict``, with the keys of any initial items size-checked first."""
    items = list(items.items() if isinstance(items, Mapping) else items)
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise pickle.UnpicklingError("OrderedDict items are not (key, value) pairs")
        check_expanded_size(item[0], "OrderedDict key", KEY_LIMITS)
    return collections.OrderedDict(items)


# (module, name) -> what it resolves to. Anything else is refused.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_stub,
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch.nn.modules.container", "ModuleDict"): ModuleRecord,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


_ATOMIC_KEYS = (str, bytes, int, float, bool, type(None))


def _check_keys(keys: list[Any]) -> None:
    for key in keys:
        if not isinstance(key, _ATOMIC_KEYS):  # str/bytes/int hash in time linear in the file
            check_expanded_size(key, "dict key or set member", KEY_LIMITS)


def _checked(load: Callable[[Any], None], keys: Callable[[list[Any]], list[Any]]) -> Callable:
    """An opcode handler of `pickle._Unpickler` that first size-checks what it will hash:
    ``keys(stack)`` of the current stack (the items after the last MARK)."""

    def handler(unpickler: pickle._Unpickler) -> None:
        _check_keys(keys(unpickler.stack))
        load(unpickler)

    return handler


def _key_checking_dispatch() -> dict[int, Callable]:
    """`pickle._Unpickler`'s opcode table with the opcodes that hash (SETITEM(S), DICT,
    ADDITEMS, FROZENSET) size-checking their keys first."""
    dispatch = dict(pickle._Unpickler.dispatch)
    for opcode, keys in (
        (pickle.SETITEM, lambda stack: stack[-2:-1]),
        (pickle.SETITEMS, lambda stack: stack[0::2]),
        (pickle.DICT, lambda stack: stack[0::2]),
        (pickle.ADDITEMS, lambda stack: stack),
        (pickle.FROZENSET, lambda stack: stack),
    ):
        dispatch[opcode[0]] = _checked(dispatch[opcode[0]], keys)
    return dispatch


class EDMUnpickler(pickle._Unpickler):
    """Allow-list unpickler: only `ALLOWED_GLOBALS` resolve; nothing embedded is executed.

    The pure-Python unpickler, so that the opcodes that hash size-check their keys first (the C
    unpickler has no such hook).
    """

    dispatch = _key_checking_dispatch()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing global {module}.{name}: not on the EDM pickle allow-list "
                f"({', '.join(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)})"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id (a {type(pid).__name__})")


def record_children(value: Any) -> Iterable[tuple[Label, Any]] | None:
    """`ddae.official.bounds.default_children`, walking a record's state as its child."""
    if isinstance(value, (PersistentObject, ModuleRecord)):
        return [(f"<{getattr(value, 'class_name', 'ModuleDict')}>", value.state)]
    return default_children(value)


def load_edm_pickle(
    source: str | Path | BinaryIO, limits: DataLimits = PICKLE_LIMITS
) -> dict[str, Any]:
    """The top-level dict of an EDM pickle, with networks as `PersistentObject` records.

    Its expanded size is checked against ``limits`` (`ddae.official.bounds`) before it is
    returned; every refusal names the file.
    """
    where = str(source if isinstance(source, (str, Path)) else getattr(source, "name", "pickle"))
    try:
        if isinstance(source, (str, Path)):
            with Path(source).open("rb") as handle:
                data = EDMUnpickler(handle).load()
        else:
            data = EDMUnpickler(source).load()
    except (pickle.UnpicklingError, DataLimitError) as error:
        raise type(error)(f"{where}: {error}") from None
    except (EOFError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise pickle.UnpicklingError(
            f"{where}: not a readable EDM pickle ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(data, dict):
        raise pickle.UnpicklingError(
            f"{where}: expected a dict at the top level, got {type(data).__name__}"
        )
    check_expanded_size(data, where, limits, children=record_children)
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
