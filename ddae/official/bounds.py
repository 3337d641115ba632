"""Size bounds on the nested data read from an official checkpoint (paper Appendix A: EDM's
network pickle), checked before anything expands it.

Unpickled data is a graph, not a tree: one list can be referenced twice by another, forty levels
deep, in a file of a few hundred bytes. Everything that treats it as a tree (converting tuples to
lists, comparing, ``repr`` in an error message, JSON in a provenance record, hashing a tuple key)
does work and allocates memory in proportion to its *expanded* size, 2^40 nodes in that example.
`check_expanded_size` computes the expanded size without expanding anything: one walk over the
distinct objects, memoised by ``id``, that sums each container's children (a shared child counts
once per reference, as a tree walk would meet it), and refuses data whose expanded node count,
expanded text (characters of strings, bytes of byte strings and big integers) or depth exceeds
its limit, and any cycle. `DataLimitError` names where the data came from, the path to the
offending value and the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ddae.official import OfficialImportError


@dataclass(frozen=True)
class DataLimits:
    """Upper bounds on the expanded (tree) size of a value."""

    nodes: int  # containers and leaves, shared ones counted once per reference
    text: int  # characters of str, bytes of bytes/bytearray and of int values
    depth: int  # nesting levels


# A pickle of EDM's CIFAR-10 SongUNet shape (DESIGN.md; tests/test_official_limits.py) expands to
# 12,666 nodes, 96,574 characters and depth 17; EDM's own modules keep a few more attributes
# each. These limits are 80x, 170x and 6x that.
PICKLE_LIMITS = DataLimits(nodes=1_000_000, text=16 << 20, depth=100)
# one setting (an ``_init_kwargs`` value, a config entry): EDM's largest is a 4-element list
VALUE_LIMITS = DataLimits(nodes=10_000, text=1 << 20, depth=20)
# a dict key or set member, hashed as it is read (a nested tuple key hashes its whole expansion)
KEY_LIMITS = DataLimits(nodes=100, text=1 << 16, depth=4)


class DataLimitError(OfficialImportError):
    """Nested data is larger (expanded), deeper or more cyclic than its limit allows."""


Label = str | int | tuple[str, Any]  # "<text>", a list index, ("key" | "item", mapping key)


def default_children(value: Any) -> Iterable[tuple[Label, Any]] | None:
    """(label, child) pairs of a container, None for a leaf: mappings give keys and values,
    lists/tuples/sets their items. Labels are formatted only for an error message."""
    if isinstance(value, Mapping):
        return [
            pair
            for key, item in value.items()
            for pair in ((("key", key), key), (("item", key), item))
        ]
    if isinstance(value, (list, tuple)):
        return enumerate(value)
    if isinstance(value, (set, frozenset)):
        return [("<member>", item) for item in value]
    return None


def _format(label: Label) -> str:
    if isinstance(label, str):
        return label
    if isinstance(label, int):
        return f"[{label}]"
    tag, key = label
    text = repr(key)[:40] if isinstance(key, (str, int, float, bool, type(None))) else "..."
    return f"<key {text}>" if tag == "key" else f"[{text}]"


def _text_size(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8
    return 0


def _path(labels: list[Label]) -> str:
    text = "".join(_format(label) for label in labels)
    return text if len(text) <= 160 else f"{text[:150]}...{text[-10:]}"


def _exceeded(limits: DataLimits, nodes: int, text: int, depth: int) -> str | None:
    """Which limit an expanded value of this size passes (None: none)."""
    shared = "a shared value counts once per reference"
    if nodes > limits.nodes:
        return f"expands to more than {limits.nodes:,} nodes (the limit; {shared})"
    if text > limits.text:
        return f"expands to more than {limits.text:,} characters of text (the limit; {shared})"
    if depth > limits.depth:
        return f"nests deeper than {limits.depth} levels (the limit)"
    return None


def check_expanded_size(
    value: Any,
    where: str,
    limits: DataLimits,
    children: Callable[[Any], Iterable[tuple[Label, Any]] | None] = default_children,
) -> tuple[int, int, int]:
    """(nodes, text, depth) of ``value`` expanded into a tree, computed without expanding it.

    Iterative and memoised by ``id``: the work is one visit per distinct object and edge, and
    stops at the first container whose expansion passes a limit. ``children`` lists a
    container's (label, child) pairs (None for a leaf). Raises `DataLimitError` naming
    ``where``, the path to the value and the limit, or the path of a cycle.
    """
    sizes: dict[int, tuple[int, int, int]] = {}  # id -> (nodes, text, depth)
    open_ids: set[int] = set()  # containers entered and not yet summed: a cycle's ancestors
    labels: list[Label] = []
    # (object, label, its children once entered or None before)
    stack: list[tuple[Any, Label, list[tuple[Label, Any]] | None]] = [(value, "", None)]
    while stack:
        node, label, entered = stack.pop()
        if entered is None:
            if id(node) in sizes:
                continue
            if id(node) in open_ids:
                raise DataLimitError(f"{where}: {_path([*labels, label])} contains itself")
            found = children(node)
            if found is None:
                sizes[id(node)] = (1, _text_size(node), 1)
                continue
            if hasattr(node, "__len__") and len(node) > limits.nodes:  # before listing them
                raise DataLimitError(
                    f"{where}: {_path([*labels, label]) or 'the data'} holds more than "
                    f"{limits.nodes:,} items (the limit)"
                )
            found = list(found)
            if len(labels) >= limits.depth:
                raise DataLimitError(
                    f"{where}: {_path([*labels, label])} nests deeper than {limits.depth} "
                    f"levels (the limit)"
                )
            open_ids.add(id(node))
            labels.append(label)
            stack.append((node, label, found))
            stack.extend((child, child_label, None) for child_label, child in reversed(found))
            continue
        nodes, text, depth = 1, 0, 0
        for _, child in entered:
            child_nodes, child_text, child_depth = sizes[id(child)]
            nodes, text, depth = nodes + child_nodes, text + child_text, max(depth, child_depth)
        depth += 1
        open_ids.discard(id(node))
        labels.pop()
        exceeded = _exceeded(limits, nodes, text, len(labels) + depth)
        if exceeded:
            raise DataLimitError(f"{where}: {_path([*labels, label]) or 'the data'} {exceeded}")
        sizes[id(node)] = (nodes, text, depth)
    return sizes[id(value)]
