"""The config schema's stage sections, generated from the stages' config classes (issue 21).

workflow/schemas/config.schema.yaml lists every key config.yaml may hold
(``additionalProperties: false``), so that a typo stops Snakemake naming the key
(`ddae.config_messages`). Its stage sections are not written by hand: each evaluation stage of
`ddae.pipeline.stages` contributes a ``$defs`` entry made from the fields of its config
dataclass (JSON type from the annotation, an enum from a ``Literal``, required = no default)
and a property of ``$defs/evaluation`` pointing at it. `generated_schema` applies them to a
loaded schema (the Snakefile validates against it, so a new stage needs no schema edit), and
``python -m ddae.pipeline.schema`` writes them between the marker lines of the committed file,
which a test keeps equal to the generated text. Each field's exact check is its dataclass's
(`ddae.config_checks`); the schema adds the closed key lists and the coarse `KEY_BOUNDS`.
Imports no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ddae.pipeline.stages import Stage, evaluation_stages

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# Coarse bounds by key name, the same in every stage (each dataclass checks its own exactly).
KEY_BOUNDS: dict[str, dict[str, float]] = {
    "epochs": {"minimum": 1},
    "steps": {"minimum": 1},
    "samples": {"minimum": 2},  # FID needs two samples for a covariance
    "batch_size": {"minimum": 1},
    "eval_batch_size": {"minimum": 1},
    "views": {"minimum": 1},
    "test_levels": {"minimum": 1},
    "labels_per_class": {"minimum": 1},
    "image_size": {"minimum": 8},  # the SD VAE's factor 8
    "seed": {"minimum": 0},
    "images": {"minimum": 0},  # 0: all
    "crop_padding": {"minimum": 0},
    "lr_reference_batch": {"minimum": 0},  # 0: lr as given
    "warmup_epochs": {"minimum": 0},
    "momentum": {"minimum": 0},
    "weight_decay": {"minimum": 0},
    "lr": {"exclusiveMinimum": 0},
    "scale": {"exclusiveMinimum": 0},
    "resident_gib": {"exclusiveMinimum": 0},
    "label_smoothing": {"minimum": 0, "exclusiveMaximum": 1},
}
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}
BEGIN = "# --- generated from ddae.pipeline.stages by `python -m ddae.pipeline.schema` ---"
END = "# --- end of the generated section ---"


def _type_schema(annotation: Any, where: str) -> dict[str, Any]:
    """The JSON schema of one annotation: int, float, bool, str, Literal[...], tuple[X, ...];
    ``X | None`` is X (None is the unset default, not a value config.yaml may write)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(options) != 1:
            raise TypeError(f"{where}: no JSON schema for {annotation}")
        return _type_schema(options[0], where)
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(annotation))}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(annotation)[0], where)}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    raise TypeError(f"{where}: no JSON schema for {annotation}")


def definition_name(config: type) -> str:
    """``SamplingConfig`` -> ``sampling``, ``ClassifierTrainingConfig`` ->
    ``classifier_training``: the class's ``$defs`` entry."""
    name = config.__name__.removesuffix("Config")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def config_definition(config: type, description: str) -> dict[str, Any]:
    """The closed ``$defs`` entry of a config dataclass (module docstring)."""
    hints = typing.get_type_hints(config)
    fields = dataclasses.fields(config)
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    properties = {
        f.name: _type_schema(hints[f.name], f"{config.__name__}.{f.name}")
        | KEY_BOUNDS.get(f.name, {})
        for f in fields
    }
    definition: dict[str, Any] = {
        "type": "object",
        "description": f"{description} ({config.__name__})",
        "additionalProperties": False,
    }
    if required:
        definition["required"] = required
    return definition | {"properties": properties}


def _stages() -> dict[str, Stage]:
    return {name: stage for name, stage in evaluation_stages().items() if stage.config}


def stage_properties() -> dict[str, dict[str, str]]:
    """``$defs/evaluation``'s stage keys: each stage's block, a reference to its class."""
    return {
        name: {"$ref": f"#/$defs/{definition_name(stage.config)}"}
        for name, stage in _stages().items()
    }


def stage_definitions() -> dict[str, dict[str, Any]]:
    """The ``$defs`` entries of the stages' config classes; a class several stages share
    (fine-tuning and scratch) is one entry, described by all of them."""
    shared: dict[type, list[str]] = {}
    for stage in _stages().values():
        shared.setdefault(stage.config, []).append(stage.description)
    return {
        definition_name(config): config_definition(config, "; ".join(descriptions))
        for config, descriptions in shared.items()
    }


def generated_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with its stage sections generated from the registry (module docstring)."""
    filled = copy.deepcopy(dict(schema))
    filled["$defs"]["evaluation"]["properties"].update(stage_properties())
    filled["$defs"].update(stage_definitions())
    return filled


def _block(value: Mapping[str, Any], indent: int) -> str:
    text = yaml.safe_dump(
        dict(value), sort_keys=False, default_flow_style=None, width=92, allow_unicode=True
    )
    return "".join(f"{' ' * indent}{line}\n" for line in text.splitlines())


def generated_text(text: str) -> str:
    """config.schema.yaml's ``text`` with each marked section rewritten: the first holds the
    evaluation block's stage keys, the second the stages' ``$defs``."""
    sections = [stage_properties(), stage_definitions()]
    pattern = re.compile(rf"^( *){re.escape(BEGIN)}\n.*?^ *{re.escape(END)}\n", re.M | re.S)
    found = pattern.findall(text)
    if len(found) != len(sections):
        raise ValueError(f"config.schema.yaml: expected {len(sections)} generated sections")
    blocks = iter(sections)

    def fill(match: re.Match[str]) -> str:
        indent = match.group(1)
        body = _block(next(blocks), len(indent))
        return f"{indent}{BEGIN}\n{body}{indent}{END}\n"

    return pattern.sub(fill, text)


def main(argv: list[str] | None = None) -> None:
    """Rewrite the generated sections of workflow/schemas/config.schema.yaml."""
    path = Path(argv[0]) if argv else SCHEMA_FILE
    path.write_text(generated_text(path.read_text()))
    print(f"wrote the stage sections of {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
