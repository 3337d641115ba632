"""The config schema and the conda environment stay in step with the code and pyproject; the
schema's stage sections are generated from the stages' config classes (ddae.pipeline.schema)."""

import dataclasses
import tomllib
from pathlib import Path
from typing import Literal

import pytest
import yaml

from ddae.alignment import AlignUniformConfig
from ddae.classifier_training import ClassifierTrainingConfig
from ddae.config_messages import load_schema, schema_message
from ddae.diffusion import DDPM, EDM
from ddae.features import FeatureCacheConfig
from ddae.fid import SamplingConfig
from ddae.networks import NETWORKS
from ddae.pipeline import schema as stage_schema
from ddae.pipeline import stages
from ddae.pipeline.stages import Stage
from ddae.settings.noisy_heads import NoisyHeadConfig
from ddae.settings.pretraining import TrainingConfig
from ddae.settings.probes import GridSearchConfig, LinearProbeConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = load_schema(SCHEMA_PATH)


def schema_keys(definition: str, tag: str | None) -> set[str]:
    return set(SCHEMA["$defs"][definition]["properties"]) - {tag}


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    ("definition", "tag", "config_class"),
    [
        ("ddpm_unet", "arch", NETWORKS["ddpm_unet"].Config),
        ("ddpmpp", "arch", NETWORKS["ddpmpp"].Config),
        ("ddpm", "kind", DDPM.Config),
        ("edm", "kind", EDM.Config),
        ("wide_resnet", "arch", NETWORKS["wide_resnet"].Config),
        ("noisy_wide_resnet", "arch", NETWORKS["noisy_wide_resnet"].Config),
        ("training", None, TrainingConfig),
        ("sampling", None, SamplingConfig),
        ("feature_cache", None, FeatureCacheConfig),
        ("grid_search", None, GridSearchConfig),
        ("linear_probe", None, LinearProbeConfig),
        ("classifier_training", None, ClassifierTrainingConfig),
        ("align_uniform", None, AlignUniformConfig),
        ("noisy_head", None, NoisyHeadConfig),
    ],
)
def test_schema_lists_exactly_the_dataclass_fields(definition, tag, config_class):
    assert schema_keys(definition, tag) == field_names(config_class)
    assert SCHEMA["$defs"][definition]["additionalProperties"] is False


def test_the_committed_schema_is_the_generated_one():
    """Its stage sections are `python -m ddae.pipeline.schema`'s output: rerun it after a
    change to a stage's config class or to the stage registry."""
    text = SCHEMA_PATH.read_text()
    assert stage_schema.generated_text(text) == text
    assert SCHEMA["$defs"]["evaluation"]["properties"]["fid"] == {"$ref": "#/$defs/sampling"}
    assert SCHEMA["$defs"]["sampling"]["required"] == ["sampler", "steps"]  # no default
    assert SCHEMA["$defs"]["sampling"]["properties"]["ddim_table"] == {
        "enum": ["authors", "training"]  # Literal[...] | None: None is the unset default
    }


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """A toy stage's settings."""

    images: int = 100
    mode: Literal["fast", "exact"] = "fast"


def test_a_registered_stage_is_in_the_loaded_schema_without_editing_it(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", dict(stages.STAGES))
    stages.register(Stage("toy", "a toy measurement", ToyConfig, "checkpoint"))
    schema = load_schema(SCHEMA_PATH)
    assert schema["$defs"]["evaluation"]["properties"]["toy"] == {"$ref": "#/$defs/toy"}
    assert schema["$defs"]["toy"]["properties"] == {
        "images": {"type": "integer", "minimum": 0},
        "mode": {"enum": ["fast", "exact"]},
    }
    config = yaml.safe_load((REPO / "tests" / "smoke" / "config.yaml").read_text())
    config["pretraining"]["digits_ddpm"]["evaluation"]["toy"] = {"image": 5}
    message = schema_message(config, schema, "")
    assert message.startswith("unknown key 'image' at pretraining.digits_ddpm.evaluation.toy")
    assert "did you mean 'images'?" in message
    config["pretraining"]["digits_ddpm"]["evaluation"]["toy"] = {"mode": "slow"}
    assert "'slow' is not one of the allowed values" in schema_message(config, schema, "")


def test_every_mapping_in_the_schema_is_closed():
    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" and "allOf" not in node:
                assert "additionalProperties" in node, where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(SCHEMA, "schema")


def test_conda_environment_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {d for d in project["dependencies"] if not d.startswith("snakemake")}
    environment = yaml.safe_load((REPO / "envs" / "ddae.yaml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert set(pip) == runtime
