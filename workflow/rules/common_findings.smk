# Helpers of workflow/rules/findings.smk: the findings' config checks and result files. Pure
# Python, no torch. Uses stage_file, evaluation and RUN_SLICE_KEYS of common.smk and
# baseline_file of common_report.smk.

FINDINGS = config.get("findings", {})


def check_findings():
    """Each model's runs exist, share the weights' recipe and grid, and the baseline is untrained."""
    for i, model in enumerate(FINDINGS.get("models", [])):
        where = f"findings.models[{i}]"
        for key in ("pretrained", "random_init"):
            if model[key] not in PRETRAINING:
                raise ConfigError(f"{where}.{key}: no pretraining run {model[key]!r}")
            if "grid" not in evaluation(model[key]):
                raise ConfigError(f"{where}.{key}: run {model[key]!r} has no grid stage")
        trained, untrained = PRETRAINING[model["pretrained"]], PRETRAINING[model["random_init"]]
        if untrained["epochs"] != [0]:
            raise ConfigError(f"{where}.random_init: run {model['random_init']!r} needs "
                              f"epochs: [0] (its untrained weights), got {untrained['epochs']}")
        for key in ("dataset", *RUN_SLICE_KEYS):
            if trained.get(key) != untrained.get(key):
                raise ConfigError(f"{where}: runs {model['pretrained']!r} and "
                                  f"{model['random_init']!r} differ in {key}")
        for key in ("steps", "grid_t", "grid", "features"):
            if evaluation(model["pretrained"]).get(key) != evaluation(model["random_init"]).get(key):
                raise ConfigError(f"{where}: runs {model['pretrained']!r} and "
                                  f"{model['random_init']!r} differ in evaluation.{key}")


with config_mistakes_reported(CONFIG_FILE):  # one message, as the other config checks
    check_findings()


def pixel_probe_file(run):
    return f"{run_directory(run)}/grid/pixels.json"


def findings_models():
    """Per model: its label and the result files ddae.findings reads."""
    models = []
    for model in FINDINGS.get("models", []):
        run = model["pretrained"]
        models.append(
            {
                "label": model["label"],
                "grid": stage_file(run, "grid"),
                "random_init_grid": stage_file(model["random_init"], "grid"),
                "pixels": pixel_probe_file(run),
                "linear": stage_file(run, "linear_probe"),
                "finetune": stage_file(run, "finetune"),
                "supervised": baseline_file(PRETRAINING[run]["dataset"], "wrn.json"),
            }
        )
    return models


def findings_targets():
    return ["results/findings.json", "results/findings.md"] if FINDINGS else []
