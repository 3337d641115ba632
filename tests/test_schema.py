"""The config schema and the conda environment stay in step with the code and pyproject."""

import dataclasses
import tomllib
from pathlib import Path

import pytest
import yaml

from ddae.alignment import AlignUniformConfig
from ddae.classifier_training import ClassifierTrainingConfig
from ddae.config_messages import load_schema
from ddae.diffusion import DDPM, EDM
from ddae.features import FeatureCacheConfig
from ddae.fid import SamplingConfig
from ddae.networks import NETWORKS
from ddae.settings.noisy_heads import NoisyHeadConfig
from ddae.settings.pretraining import TrainingConfig
from ddae.settings.probes import GridSearchConfig, LinearProbeConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


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
        ("features", None, FeatureCacheConfig),
        ("grid_probe", None, GridSearchConfig),
        ("linear_probe", None, LinearProbeConfig),
        ("classifier_training", None, ClassifierTrainingConfig),
        ("align_uniform", None, AlignUniformConfig),
        ("noisy_head", None, NoisyHeadConfig),
    ],
)
def test_schema_lists_exactly_the_dataclass_fields(definition, tag, config_class):
    assert schema_keys(definition, tag) == field_names(config_class)
    assert SCHEMA["$defs"][definition]["additionalProperties"] is False


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
