# Inputs and params of the tables and figures (workflow/rules/report.smk): which result files
# each one reads (REPORT_PARAMS, one entry per table or figure of ddae.report.registry). Pure
# Python, no torch.

import yaml

from ddae.paper_shape import stand_in_marker
from ddae.report.labels import network_label, on_paper_dataset
from ddae.report.registry import REPORTS
from ddae.report.registry import report_targets as registered_targets

MODELS = TABLES.get("models", {})
FIGURES = config.get("figures", {})


def baseline_file(dataset, name):
    """results/<dataset>/baselines/<name>, or None when the dataset has no such baseline."""
    spec = SUPERVISED.get(dataset)
    if spec is None or (name.startswith("noisy") and "noisy" not in spec):
        return None
    return f"results/{dataset}/baselines/{name}"


def paper_key(run):
    """The paper model a run stands for (tables.models), or None."""
    return next((key for key, value in MODELS.items() if value == run), None)


def model_runs():
    """(paper model key, run) for the DDAE models of tables.models."""
    return [(key, run) for key, run in MODELS.items() if not key.endswith("_wrn")]


# The paper's rows of Tables 2-4 (package data ddae/reference/paper_results.yaml): each row's
# `ours` names the model and metric it is reproduced by, so each table reads exactly those files.
with open(os.path.join(workflow.basedir, "ddae", "reference", "paper_results.yaml")) as _file:
    PAPER_ROWS = yaml.safe_load(_file)


def shown_results(table):
    """(model, metric) pairs that Table 2, 3 or 4 shows: each row's `ours`, and for Table 2 the
    FID of the rows whose paper FID is a number."""
    pairs = []
    for row in PAPER_ROWS[table]:
        ours = row.get("ours")
        if ours is None:
            continue
        pairs.append((ours["model"], ours["metric"]))
        if table == "table2" and isinstance(row.get("fid"), (int, float)):
            pairs.append((ours["model"], "fid"))
    return pairs


def comparison_results(table):
    """Result files of the configured paper models that one of Tables 2-4 shows (and no more:
    Table 3 reads CIFAR-10 results only, Table 4 Tiny-ImageNet ones)."""
    results = {}
    for model, metric in shown_results(table):
        name = MODELS.get(model)
        if name is None:
            continue
        if model.endswith("_wrn"):
            path = baseline_file(name, "wrn.json")
        else:
            path = stage_file(name, {"linear": "linear_probe"}.get(metric, metric))
        results.setdefault(model, {})[metric] = path
    return results


def settings_columns(stage):
    """Tables 6-8: the settings each job actually used, with the paper model they stand for
    (DiT jobs read augmented latents: their flip and crop are the latents config's)."""
    columns = [
        {"label": run, "config": evaluation(run)[stage], "paper": key if stage != "scratch" else "ddae"}
        | ({"augmentation": evaluation(run).get("latents", {})} if run in DIT_RUNS else {})
        for key, run in model_runs()
        if stage in evaluation(run)
    ]
    if stage == "scratch":
        columns += [
            {
                "label": f"{dataset} {network_label(spec['network'])}",
                "config": spec["training"],
                "paper": "wrn",
            }
            for dataset, spec in SUPERVISED.items()
        ]
    return columns


def grid_runs():
    return [(key, run) for key, run in model_runs() if "grid" in evaluation(run)]


def grid_choice_file(run):
    """The grid search's chosen (layer, t): the JSON its rule writes beside the grid CSV (the
    tables and figures read the winner from it, never recompute it)."""
    return stage_file(run, "grid").replace(".csv", ".json")


def table9_columns():
    return [
        {
            "label": run,
            "grid": stage_file(run, "grid"),
            "choice": grid_choice_file(run),
            "paper": key,
        }
        for key, run in grid_runs()
    ]


def layer_choice_runs():
    return [
        {
            "label": run,
            "align_uniform": stage_file(run, "align_uniform"),
            "grid": stage_file(run, "grid"),
            "choice": grid_choice_file(run),
            "paper": paper_key(run),
        }
        for run in PRETRAINING
        if {"align_uniform", "grid"} <= set(evaluation(run))
    ]


def figure2_grids():
    return {label: stage_file(run, "grid") for label, run in FIGURES.get("figure2", {}).items()}


def figure2_choices():
    return {label: grid_choice_file(run) for label, run in FIGURES.get("figure2", {}).items()}


def figure2_paper():
    """Figure 2 panels that stand for a paper model get its Table 9 pair marked."""
    lines = FIGURES.get("figure2", {}).items()
    return {label: paper_key(run) for label, run in lines if paper_key(run)}


def figure3_series():
    return {
        label: {epoch: stage_file(run, "align_uniform", epoch) for epoch in evaluated_epochs(run)}
        for label, run in FIGURES.get("figure3", {}).items()
    }


def figure4_series():
    return {
        label: [
            {
                "epoch": epoch,
                "fid": stage_file(run, "fid", epoch),
                "linear": stage_file(run, "linear_probe", epoch),
            }
            for epoch in evaluated_epochs(run)
        ]
        for label, run in FIGURES.get("figure4", {}).items()
    }


def on_paper_axis(dataset, key):
    """Whether a run on `dataset` may stand beside paper model `key`'s values (ddae.report.labels:
    the paper's dataset itself, not the paper-shape miniature's stand-in of it)."""
    return on_paper_dataset(dataset, key, stand_in_marker(".", dataset).is_file())


def figure5_panels():
    """Figure 5: the paper models with a FID (its x axis: DDPM and EDM, not DiT), per dataset,
    each under its run's name; the paper's points and WRN line only on the paper's dataset."""
    panels = {}
    for key, run in model_runs():
        if "fid" not in evaluation(run):
            continue
        dataset = PRETRAINING[run]["dataset"]
        wrn = SUPERVISED.get(dataset, {}).get("network", {"arch": "wide_resnet"})
        panel = panels.setdefault(
            dataset,
            {
                "models": {},
                "wrn": baseline_file(dataset, "wrn.json"),
                "wrn_label": network_label(wrn),
                "paper_wrn": None,
            },
        )
        shown_beside_paper = on_paper_axis(dataset, key)
        panel["models"][run] = {
            "fid": stage_file(run, "fid"),
            "linear": stage_file(run, "linear_probe"),
            "finetune": stage_file(run, "finetune"),
            "scratch": stage_file(run, "scratch"),
            "paper": key if shown_beside_paper else None,
        }
        if shown_beside_paper:
            panel["paper_wrn"] = f"{dataset}_wrn"
    return panels


def figure6_panels():
    panels = {}
    for key, run in model_runs():
        if "noisy" not in evaluation(run):
            continue
        perturbation = "vp" if PRETRAINING[run]["framework"]["kind"] == "ddpm" else "ve"
        dataset = PRETRAINING[run]["dataset"]
        title = f"{dataset}, {perturbation.upper()} ({run})"
        noisy_wrn = SUPERVISED.get(dataset, {}).get("noisy", {})
        panels[title] = {
            f"{run} + MLP head": stage_file(run, "noisy"),
            network_label(noisy_wrn.get("network", {"arch": "noisy_wide_resnet"})): (
                baseline_file(dataset, f"noisy_wrn_{perturbation}.csv")
            ),
        }
    return panels


def figure_source(runs, fid=False):
    """Under each figure: the data it shows (dataset and resolution, each run's network,
    checkpoint source and epochs) and, for FID axes, the FID extractor."""
    parts = []
    for dataset in dict.fromkeys(PRETRAINING[run]["dataset"] for run in runs):
        described = []
        for run in dict.fromkeys(r for r in runs if PRETRAINING[r]["dataset"] == dataset):
            spec = PRETRAINING[run]
            origin = ", ".join(f"{k} {v}" for k, v in spec.get("source", {}).items())
            epochs = ", ".join(str(e) for e in evaluated_epochs(run))
            described.append(
                f"{run} ({spec['network']['arch']}, {origin or 'trained here'}, "
                f"checkpoints at epoch {epochs})"
            )
        # the paper-shape miniature's synthetic stand-ins say so (ddae.paper_shape)
        stand_in = stand_in_marker(".", dataset).is_file()
        name = dataset + (" (the paper-shape miniature's synthetic stand-in)" if stand_in else "")
        parts.append(f"{name} at {DATASETS[dataset]['resolution']} px: {', '.join(described)}")
    text = "Data: " + ("; ".join(parts) or "no runs configured")
    if fid:
        extractor = FID["extractor"]
        text += f". FID: {extractor}" + (
            "" if extractor == "inception" else " (offline stand-in, not the paper's Inception)"
        )
    return text


def result_paths(value):
    """Every result path inside a nested params mapping."""
    if isinstance(value, dict):
        return [path for item in value.values() for path in result_paths(item)]
    if isinstance(value, list):
        return [path for item in value for path in result_paths(item)]
    return [value] if isinstance(value, str) and value.startswith("results/") else []


def files_in(value):
    """The result paths of a table's or figure's params (so the DAG sees them as inputs). In
    the main process the existing ones are validated first (ddae.result_files): a damaged
    result stops the run naming the file, before Snakemake deletes the outputs that read it."""
    paths = result_paths(value)
    if workflow.is_main_process:
        from ddae.result_files import check_existing_results

        check_existing_results(paths)
    return paths


def runs_with(stage):
    return [run for _, run in model_runs() if stage in evaluation(run)]


# The writer's params of each registered table and figure (ddae.report.registry): the result
# files it reads (its inputs, by files_in) and the config it shows.
REPORT_PARAMS = {
    "table2": lambda: {"results": comparison_results("table2")},
    "table3": lambda: {"results": comparison_results("table3")},
    "table4": lambda: {"results": comparison_results("table4")},
    "table5": lambda: {"columns": table5_columns()},
    "table6": lambda: {"columns": settings_columns("linear_probe")},
    "table7": lambda: {"columns": settings_columns("finetune")},
    "table8": lambda: {"columns": settings_columns("scratch")},
    "table9": lambda: {"columns": table9_columns()},
    "layer_choice": lambda: {"runs": layer_choice_runs()},
    "figure2": lambda: {
        "grids": figure2_grids(),
        "choices": figure2_choices(),
        "paper": figure2_paper(),
        "source": figure_source(FIGURES.get("figure2", {}).values()),
    },
    "figure3": lambda: {
        "series": figure3_series(),
        "source": figure_source(FIGURES.get("figure3", {}).values()),
    },
    "figure4": lambda: {
        "series": figure4_series(),
        "source": figure_source(FIGURES.get("figure4", {}).values(), fid=True),
    },
    "figure5": lambda: {
        "panels": figure5_panels(),
        "source": figure_source(runs_with("fid"), fid=True),
    },
    "figure6": lambda: {
        "panels": figure6_panels(),
        "source": figure_source(runs_with("noisy")),
    },
}


def report_params(name):
    if name not in REPORT_PARAMS:
        raise ValueError(
            f"table or figure {name!r} is registered (ddae.report.registry) but has no "
            "REPORT_PARAMS entry in workflow/rules/common_report.smk"
        )
    return REPORT_PARAMS[name]()


def report_outputs(entry):
    """Output name -> path; the first output goes into the HTML report with its caption
    workflow/report/<name>.rst, where there is one."""
    outputs = dict(entry.outputs())
    shown = next(iter(outputs))
    caption = f"{workflow.basedir}/workflow/report/{entry.name}.rst"
    outputs[shown] = report(
        outputs[shown],
        caption=f"../report/{entry.name}.rst" if os.path.exists(caption) else None,
        category=entry.kind.category,
    )
    return outputs


def report_targets():
    return registered_targets()
