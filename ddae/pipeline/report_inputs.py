"""What each table and figure reads (paper Tables 2-9, Figures 2-6), the findings and
results/validation.md: the params of their rules (workflow/rules/report.smk, findings.smk,
validation.smk), built from the config through `ddae.pipeline.layout.Layout`.

A table's or figure's params name the result files it reads and the config it shows; its
inputs are exactly those result files (`ReportInputs.files_in`), so a target plans only what
it shows. Which run stands for which of the paper's models is ``tables.models`` (Tables 2-4,
6-9, Figures 5-6) and ``figures.*`` (label -> run for Figures 2-4). Imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

import yaml

from ddae.config_messages import SAFE_LOADER, config_mistakes_reported
from ddae.paper_shape import stand_in_marker
from ddae.pipeline.layout import Layout
from ddae.report.labels import network_label, on_paper_dataset
from ddae.report.registry import REPORTS, Report, report_targets
from ddae.validation import benchmark_files, validation_plan

# The paper's rows of Tables 2-4 (package data ddae/reference/paper_results.yaml): each row's
# `ours` names the model and metric it is reproduced by, so each table reads exactly those files.
PAPER_ROWS = yaml.load(
    resources.files("ddae.reference").joinpath("paper_results.yaml").read_text(),
    Loader=SAFE_LOADER,
)
FINDINGS_TARGETS = ["results/findings.json", "results/findings.md"]
# Rules whose jobs results/validation.md reads; their benchmark files give its times per stage.
VALIDATION_RULES = (
    "download_official_file",
    "download_official_folder",
    "import_official",
    "stand_in_checkpoint",
    "download_dataset",
    "prepare_dataset",
    "download_inception",
    "fid_reference",
    "sample_fid",
    "linear_probe_at_pair",
)


def result_paths(value: Any) -> list[str]:
    """Every result path inside a nested params mapping."""
    if isinstance(value, dict):
        return [path for item in value.values() for path in result_paths(item)]
    if isinstance(value, list):
        return [path for item in value for path in result_paths(item)]
    return [value] if isinstance(value, str) and value.startswith("results/") else []


def shown_results(table: str) -> list[tuple[str, str]]:
    """(model, metric) pairs that Table 2, 3 or 4 shows: each row's `ours`, and for Table 2
    the FID of the rows whose paper FID is a number."""
    pairs = []
    for row in PAPER_ROWS[table]:
        ours = row.get("ours")
        if ours is None:
            continue
        pairs.append((ours["model"], ours["metric"]))
        if table == "table2" and isinstance(row.get("fid"), (int, float)):
            pairs.append((ours["model"], "fid"))
    return pairs


class ReportInputs:
    """The tables', figures' and findings' params for one config (module docstring).
    ``verified``: the check of the existing result files a table reads (the main process's
    planning check, `ddae.pipeline.contracts`); None skips it (cluster jobs)."""

    def __init__(
        self,
        layout: Layout,
        verified: Callable[[list[str]], Any] | None = None,
        config_file: str = "config.yaml",
        basedir: str = ".",
    ) -> None:
        self.layout = layout
        self.config_file = config_file
        self.basedir = basedir  # the Snakefile's folder (workflow/report/ captions)
        self.verified = verified
        self.models = layout.tables.get("models", {})
        self.figures = layout.config.get("figures", {})
        self.findings = layout.config.get("findings", {})

    def files_in(self, value: Any) -> list[str]:
        """The result paths of a table's or figure's params (so the DAG sees them as inputs),
        the existing ones checked first: a damaged result stops the run naming the file,
        before Snakemake deletes the outputs that read it."""
        paths = result_paths(value)
        if self.verified is not None:
            self.verified(paths)
        return paths

    def entries(self) -> list[Report]:
        """The registered tables and figures (ddae.report.registry), one rule each."""
        return list(REPORTS.values())

    def outputs(self, entry: Report, report: Callable[..., Any]) -> dict[str, Any]:
        """Output name -> path; the first output goes into the HTML report (Snakemake's
        ``report``) with its caption workflow/report/<name>.rst, where there is one."""
        outputs: dict[str, Any] = dict(entry.outputs())
        shown = next(iter(outputs))
        caption = os.path.join(self.basedir, "workflow", "report", f"{entry.name}.rst")
        outputs[shown] = report(
            outputs[shown],
            caption=f"../report/{entry.name}.rst" if os.path.exists(caption) else None,
            category=entry.kind.category,
        )
        return outputs

    def params(self, name: str) -> dict[str, Any]:
        """The writer's params of a registered table or figure (ddae.report.registry)."""
        if name not in REPORT_PARAMS:
            raise ValueError(
                f"table or figure {name!r} is registered (ddae.report.registry) but has no "
                "@params_of entry in ddae/pipeline/report_inputs.py"
            )
        return REPORT_PARAMS[name](self, name)

    # --- who stands for which paper model ------------------------------------------------------

    def paper_key(self, run: str) -> str | None:
        """The paper model a run stands for (tables.models), or None."""
        return next((key for key, value in self.models.items() if value == run), None)

    def model_runs(self) -> list[tuple[str, str]]:
        """(paper model key, run) for the DDAE models of tables.models."""
        return [(key, run) for key, run in self.models.items() if not key.endswith("_wrn")]

    def runs_with(self, stage: str) -> list[str]:
        return [run for _, run in self.model_runs() if stage in self.layout.evaluation(run)]

    def on_paper_axis(self, dataset: str, key: str) -> bool:
        """Whether a run on `dataset` may stand beside paper model `key`'s values
        (ddae.report.labels: the paper's dataset itself, not the miniature's stand-in)."""
        return on_paper_dataset(dataset, key, stand_in_marker(".", dataset).is_file())

    # --- Tables 2-9 ---------------------------------------------------------------------------

    def comparison_results(self, table: str) -> dict[str, dict[str, str | None]]:
        """Result files of the configured paper models that one of Tables 2-4 shows (and no
        more: Table 3 reads CIFAR-10 results only, Table 4 Tiny-ImageNet ones)."""
        results: dict[str, dict[str, str | None]] = {}
        for model, metric in shown_results(table):
            name = self.models.get(model)
            if name is None:
                continue
            if model.endswith("_wrn"):
                path = self.layout.baseline_file(name, "wrn.json")
            else:
                path = self.layout.stage_file(name, {"linear": "linear_probe"}.get(metric, metric))
            results.setdefault(model, {})[metric] = path
        return results

    def settings_columns(self, stage: str) -> list[dict[str, Any]]:
        """Tables 6-8: the settings each job actually used, with the paper model they stand
        for (DiT jobs read augmented latents: their flip and crop are the latents config's)."""
        evaluation, dit_runs = self.layout.evaluation, self.layout.dit_runs()
        columns = [
            {
                "label": run,
                "config": evaluation(run)[stage],
                "paper": key if stage != "scratch" else "ddae",
            }
            | ({"augmentation": evaluation(run).get("latents", {})} if run in dit_runs else {})
            for key, run in self.model_runs()
            if stage in evaluation(run)
        ]
        if stage == "scratch":
            columns += [
                {
                    "label": f"{dataset} {network_label(spec['network'])}",
                    "config": spec["training"],
                    "paper": "wrn",
                }
                for dataset, spec in self.layout.supervised.items()
            ]
        return columns

    # --- Figures 2-6 --------------------------------------------------------------------------

    def figure_runs(self, figure: str) -> Mapping[str, str]:
        """label -> run of one of Figures 2-4 (``figures.<figure>``)."""
        return self.figures.get(figure, {})

    def figure_source(self, runs: Iterable[str], fid: bool = False) -> str:
        """Under each figure: the data it shows (dataset and resolution, each run's network,
        checkpoint source and epochs) and, for FID axes, the FID extractor."""
        pretraining, parts = self.layout.pretraining, []
        runs = list(runs)
        for dataset in dict.fromkeys(pretraining[run]["dataset"] for run in runs):
            described = []
            for run in dict.fromkeys(r for r in runs if pretraining[r]["dataset"] == dataset):
                spec = pretraining[run]
                origin = ", ".join(f"{k} {v}" for k, v in spec.get("source", {}).items())
                epochs = ", ".join(str(e) for e in self.layout.evaluated_epochs(run))
                described.append(
                    f"{run} ({spec['network']['arch']}, {origin or 'trained here'}, "
                    f"checkpoints at epoch {epochs})"
                )
            # the paper-shape miniature's synthetic stand-ins say so (ddae.paper_shape)
            stand_in = stand_in_marker(".", dataset).is_file()
            name = dataset + (
                " (the paper-shape miniature's synthetic stand-in)" if stand_in else ""
            )
            resolution = self.layout.datasets[dataset]["resolution"]
            parts.append(f"{name} at {resolution} px: {', '.join(described)}")
        text = "Data: " + ("; ".join(parts) or "no runs configured")
        if fid:
            extractor = self.layout.fid["extractor"]
            text += f". FID: {extractor}" + (
                "" if extractor == "inception" else " (offline stand-in, not the paper's Inception)"
            )
        return text

    # --- the findings (ddae.findings) ---------------------------------------------------------

    def findings_models(self) -> list[dict[str, Any]]:
        """Per model: its label and, per seed (the model's runs, then its replicates'), the
        result files ddae.findings reads; the first seed's checkpoint and grid choice give the
        findings' scale line."""
        layout, models = self.layout, []
        for model in self.findings.get("models", []):
            seeds = []
            for pair in (model, *model.get("replicates", [])):
                run = pair["pretrained"]
                seeds.append(
                    {
                        "grid": layout.stage_file(run, "grid"),
                        "grid_choice": layout.grid_choice_file(run),
                        "checkpoint": layout.checkpoint_path(run, layout.final_epoch(run)),
                        "random_init_grid": layout.stage_file(pair["random_init"], "grid"),
                        "pixels": layout.stage_file(run, "grid", file="pixels"),
                        "linear": layout.stage_file(run, "linear_probe"),
                        "finetune": layout.stage_file(run, "finetune"),
                        "supervised": layout.baseline_file(
                            layout.pretraining[run]["dataset"], "wrn.json"
                        ),
                    }
                )
            models.append({"label": model["label"], "seeds": seeds})
        return models

    def findings_targets(self) -> list[str]:
        return list(FINDINGS_TARGETS) if self.findings else []

    def targets(self) -> list[str]:
        """Every table's and figure's outputs (ddae.report.registry), then the findings'."""
        return report_targets() + self.findings_targets()

    # --- results/validation.md (ddae.validation) ----------------------------------------------

    def validation_plan(self) -> list[dict[str, Any]]:
        """Per number of results/validation.md: its run, source and result file; a config that
        cannot give a number stops with one message naming the key."""
        with config_mistakes_reported(self.config_file):
            return validation_plan(self.models, self.layout.pretraining, self.layout.stage_file)

    def validation_results(self, wildcards: Any) -> dict[str, str]:
        """The result file of each number (the validation rule's named inputs), an existing
        one checked against its contract (`Layout.verified`)."""
        plan = self.validation_plan()
        return {entry["check"]: self.layout.verified(entry["result"]) for entry in plan}

    def validation_benchmarks(self, rules: Any) -> dict[str, str]:
        """{job: benchmark file} of the jobs behind the validation's numbers."""
        patterns = {name: str(getattr(rules, name).benchmark) for name in VALIDATION_RULES}
        return benchmark_files(self.validation_plan(), patterns, self.layout.fid["extractor"])


# --- each table's and figure's params: @params_of(name) registers ``function(inputs, name)`` --

REPORT_PARAMS: dict[str, Callable[[ReportInputs, str], dict[str, Any]]] = {}


def params_of(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the params function of these tables or figures (ddae.report.registry names)."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            REPORT_PARAMS[name] = function
        return function

    return register


@params_of("table2", "table3", "table4")
def comparison_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    return {"results": inputs.comparison_results(name)}


@params_of("table5")
def table5_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    """Table 5 columns: each run's network spec and final epoch, with the paper's
    values."""
    pretraining = inputs.layout.pretraining
    columns = [
        {
            "label": column["label"],
            "network": pretraining[column["run"]]["network"],
            "epochs": inputs.layout.final_epoch(column["run"]),
            "paper": column.get("paper", {}),
        }
        for column in inputs.layout.tables.get("table5", [])
    ]
    return {"columns": columns}


SETTINGS_TABLES = {"table6": "linear_probe", "table7": "finetune", "table8": "scratch"}


@params_of(*SETTINGS_TABLES)
def settings_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    return {"columns": inputs.settings_columns(SETTINGS_TABLES[name])}


@params_of("table9")
def table9_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    columns = [
        {
            "label": run,
            "grid": inputs.layout.stage_file(run, "grid"),
            "choice": inputs.layout.grid_choice_file(run),
            "paper": key,
        }
        for key, run in inputs.model_runs()
        if "grid" in inputs.layout.evaluation(run)
    ]
    return {"columns": columns}


@params_of("layer_choice")
def layer_choice_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    runs = [
        {
            "label": run,
            "align_uniform": inputs.layout.stage_file(run, "align_uniform"),
            "grid": inputs.layout.stage_file(run, "grid"),
            "choice": inputs.layout.grid_choice_file(run),
            "paper": inputs.paper_key(run),
        }
        for run in inputs.layout.pretraining
        if {"align_uniform", "grid"} <= set(inputs.layout.evaluation(run))
    ]
    return {"runs": runs}


@params_of("figure2")
def figure2_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    lines = inputs.figure_runs("figure2")
    return {
        "grids": {label: inputs.layout.stage_file(run, "grid") for label, run in lines.items()},
        "choices": {label: inputs.layout.grid_choice_file(run) for label, run in lines.items()},
        # panels that stand for a paper model get its Table 9 pair marked
        "paper": {
            label: inputs.paper_key(run) for label, run in lines.items() if inputs.paper_key(run)
        },
        "source": inputs.figure_source(lines.values()),
    }


@params_of("figure3")
def figure3_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    lines = inputs.figure_runs("figure3")
    series = {
        label: {
            epoch: inputs.layout.stage_file(run, "align_uniform", epoch)
            for epoch in inputs.layout.evaluated_epochs(run)
        }
        for label, run in lines.items()
    }
    return {"series": series, "source": inputs.figure_source(lines.values())}


@params_of("figure4")
def figure4_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    lines = inputs.figure_runs("figure4")
    series = {
        label: [
            {
                "epoch": epoch,
                "fid": inputs.layout.stage_file(run, "fid", epoch),
                "linear": inputs.layout.stage_file(run, "linear_probe", epoch),
            }
            for epoch in inputs.layout.evaluated_epochs(run)
        ]
        for label, run in lines.items()
    }
    return {"series": series, "source": inputs.figure_source(lines.values(), fid=True)}


@params_of("figure5")
def figure5_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    """Figure 5: the paper models with a FID (its x axis: DDPM and EDM, not DiT), per
    dataset, each under its run's name; the paper's points and WRN line only on the
    paper's dataset."""
    layout, panels = inputs.layout, {}
    for key, run in inputs.model_runs():
        if "fid" not in layout.evaluation(run):
            continue
        dataset = layout.pretraining[run]["dataset"]
        wrn = layout.supervised.get(dataset, {}).get("network", {"arch": "wide_resnet"})
        panel = panels.setdefault(
            dataset,
            {
                "models": {},
                "wrn": layout.baseline_file(dataset, "wrn.json"),
                "wrn_label": network_label(wrn),
                "paper_wrn": None,
            },
        )
        shown_beside_paper = inputs.on_paper_axis(dataset, key)
        panel["models"][run] = {
            "fid": layout.stage_file(run, "fid"),
            "linear": layout.stage_file(run, "linear_probe"),
            "finetune": layout.stage_file(run, "finetune"),
            "scratch": layout.stage_file(run, "scratch"),
            "paper": key if shown_beside_paper else None,
        }
        if shown_beside_paper:
            panel["paper_wrn"] = f"{dataset}_wrn"
    return {"panels": panels, "source": inputs.figure_source(inputs.runs_with("fid"), fid=True)}


@params_of("figure6")
def figure6_params(inputs: ReportInputs, name: str) -> dict[str, Any]:
    layout, panels = inputs.layout, {}
    for _, run in inputs.model_runs():
        if "noisy" not in layout.evaluation(run):
            continue
        perturbation = "vp" if layout.pretraining[run]["framework"]["kind"] == "ddpm" else "ve"
        dataset = layout.pretraining[run]["dataset"]
        title = f"{dataset}, {perturbation.upper()} ({run})"
        noisy_wrn = layout.supervised.get(dataset, {}).get("noisy", {})
        panels[title] = {
            f"{run} + MLP head": layout.stage_file(run, "noisy"),
            network_label(noisy_wrn.get("network", {"arch": "noisy_wide_resnet"})): (
                layout.baseline_file(dataset, f"noisy_wrn_{perturbation}.csv")
            ),
        }
    return {"panels": panels, "source": inputs.figure_source(inputs.runs_with("noisy"))}
