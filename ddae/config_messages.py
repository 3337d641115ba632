"""One clear message for a mistake in config.yaml, instead of a schema dump.

The Snakefile checks the config inside `config_mistakes_reported`: a schema violation (from
``workflow/schemas/config.schema.yaml``) or a `ddae.configs.ConfigError` raised by a later check
stops the workflow before any job with one message on stderr. For a schema violation the
message names the key path and its line in config.yaml, the keys allowed there, a "did you
mean" for near misses, and, when the block is a YAML anchor (``&name``) that several runs share
through aliases (``*name``), the anchor and every place that uses it, so that the path named is
the one the user edited (the anchor's definition), not the first run that happens to alias it.

Pure Python (PyYAML and jsonschema, no torch): the Snakefile imports it on every parse.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ddae.configs import ConfigError, Key
from ddae.configs import dotted_key as _dotted
from ddae.datasets.registry import config_schema
from ddae.pipeline.schema import generated_schema

# libyaml's safe loader where PyYAML has it (5x faster: every Snakemake parse loads the schema)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *anchor`


def _node_paths(root: yaml.Node) -> dict[int, list[tuple[Key, ...]]]:
    """id(node) -> every key path reaching it, in document order (aliases share one node)."""
    paths: dict[int, list[tuple[Key, ...]]] = {}

    def walk(node: yaml.Node, path: tuple[Key, ...]) -> None:
        paths.setdefault(id(node), []).append(path)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                # a merge key (`<<: *anchor`) puts the anchor's keys in this very mapping
                walk(value, path if key.tag == MERGE_TAG else (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                walk(value, (*path, index))

    walk(root, ())
    return paths


def _node_at(root: yaml.Node, path: Sequence[Key]) -> yaml.Node | None:
    node = root
    for key in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return None
        if node is None:
            return None
    return node


def _key_line(root: yaml.Node, path: Sequence[Key]) -> int | None:
    """1-based line of the last key of ``path`` (or of the value at ``path``)."""
    if not path:
        return None
    parent = _node_at(root, path[:-1])
    if isinstance(parent, yaml.MappingNode):
        for key, _ in parent.value:
            if key.value == path[-1]:
                return key.start_mark.line + 1
    node = _node_at(root, path)
    return None if node is None else node.start_mark.line + 1


def _anchor_name(lines: list[str], node: yaml.Node) -> str | None:
    line, column = lines[node.start_mark.line], node.start_mark.column
    match = re.match(r"&([^\s,\[\]{}]+)", line[column:]) or re.search(
        r"&([^\s,\[\]{}]+)\s*$", line[:column]
    )
    return match.group(1) if match else None


def _users(paths: list[tuple[Key, ...]]) -> str:
    runs = [p[1] for p in paths if len(p) > 1 and p[0] == "pretraining"]
    if len(runs) == len(paths) and len(set(runs)) == len(runs):
        return f"{len(runs)} runs: {', '.join(map(str, runs))}"
    return f"{len(paths)} places: {', '.join(_dotted(p) for p in paths)}"


def _composed(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader) if text else None
    except yaml.YAMLError:
        return None


def _through_anchor(
    root: yaml.Node | None, text: str, path: tuple[Key, ...]
) -> tuple[tuple[Key, ...], str | None]:
    """The block the user wrote: ``path`` followed through aliases back to the anchor's
    definition, and a line saying who else uses that anchor (None when no alias is crossed)."""
    if root is None:
        return path, None
    every = _node_paths(root)
    for depth in range(1, len(path) + 1):  # the outermost alias crossed
        node = _node_at(root, path[:depth])
        reached = every.get(id(node), []) if node is not None else []
        if len(reached) > 1:
            name = _anchor_name(text.splitlines(), node)
            label = f"the YAML anchor &{name}" if name else "a YAML anchor"
            users = f"used by {_users(reached)}; a change there applies to all"
            return reached[0] + path[depth:], f"this block is {label}, {users}"
    return path, None


def _written_at(root: yaml.Node, error: jsonschema.ValidationError) -> bool:
    """Whether the YAML text holds the error's value where it lies (an unknown key written in
    that very mapping, not merged into it)."""
    node = _node_at(root, tuple(error.absolute_path))
    if node is None:
        return False
    if error.validator == "additionalProperties" and isinstance(node, yaml.MappingNode):
        allowed = error.schema.get("properties", {})
        return any(key.value not in allowed and key.tag != MERGE_TAG for key, _ in node.value)
    return True


def schema_message(config: Mapping[str, Any], schema: Mapping[str, Any], text: str) -> str | None:
    """The message for the first schema violation of ``config`` (None if valid). ``text`` is
    config.yaml's source, for line numbers and anchors (an empty text gives none)."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if not errors:
        return None
    root = _composed(text)
    # an error inside a block merged in with `<<: *anchor` has no line of its own; the same
    # error where the anchor is defined or aliased has one (and names the anchor's users)
    located = [e for e in errors if root is None or _written_at(root, e)]
    error = jsonschema.exceptions.best_match(located or errors)
    path, anchor = _through_anchor(root, text, tuple(error.absolute_path))
    details = []
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        key = unknown[0] if unknown else "?"
        where = (*path, key)
        headline = f"unknown key {key!r} at {_dotted(where)}"
        details.append(f"allowed keys there: {', '.join(allowed) or '(none)'}")
        near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        line = _key_line(root, where) if root is not None else None
    elif error.validator == "enum":
        where = path
        headline = f"{_dotted(where)}: {error.instance!r} is not one of the allowed values"
        details.append(f"allowed values: {', '.join(map(repr, error.validator_value))}")
        near = difflib.get_close_matches(str(error.instance), map(str, error.validator_value), 1)
        line = _key_line(root, where) if root is not None else None
    else:
        where = path
        headline = f"{_dotted(where)}: {error.message}"
        near = []
        line = _key_line(root, where) if root is not None else None
    if near:
        details.append(f"did you mean {near[0]!r}?")
    if anchor is not None:
        details.append(anchor)
    at = f" (line {line})" if line else ""
    return f"{headline}{at}\n" + "".join(f"  {detail}\n" for detail in details)


def load_schema(schema_path: str | Path) -> dict[str, Any]:
    """config.schema.yaml with the registered datasets filled in (`ddae.datasets.registry`) and
    the stage sections generated from the stages' config classes (`ddae.pipeline.schema`)."""
    text = Path(schema_path).read_text()
    return generated_schema(config_schema(yaml.load(text, Loader=SAFE_LOADER)))


def check_schema(config: Mapping[str, Any], schema_path: str | Path, config_path: str | Path):
    """Raise `ConfigError` with `schema_message` unless ``config`` follows the schema."""
    schema = load_schema(schema_path)
    config_path = Path(config_path)
    text = config_path.read_text() if config_path.is_file() else ""
    message = schema_message(config, schema, text)
    if message is not None:
        raise ConfigError(f"{config_path}: {message}")


def keyed_message(error: ConfigError, text: str) -> str:
    """A `ConfigError` that carries its key path, with the key's line in config.yaml (``text``)
    and, for a key inside a YAML anchor, the anchor's own path and its users."""
    message = str(error)
    root = _composed(text)
    if error.key is None or root is None:
        return message
    path, anchor = _through_anchor(root, text, tuple(error.key))
    headline, _, rest = message.partition("\n")
    old, new = _dotted(error.key), _dotted(path)
    if headline.startswith(old):
        headline = new + headline[len(old) :]
    line = _key_line(root, path)
    headline += f" (line {line})" if line else ""
    return f"{headline}\n{rest}" + (f"  {anchor}\n" if anchor else "")


@contextmanager
def config_mistakes_reported(config_path: str | Path) -> Iterator[None]:
    """Print a `ConfigError` raised inside as one message (no traceback) and stop."""
    try:
        yield
    except ConfigError as error:
        config_path = Path(config_path)
        text = config_path.read_text() if error.key and config_path.is_file() else ""
        text = keyed_message(error, text)
        if not text.startswith(str(config_path)):
            text = f"{config_path}: {text}"
        print(f"Error in the config: {text.rstrip()}", file=sys.stderr)
        raise SystemExit(1) from None
