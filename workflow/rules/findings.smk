# The paper's qualitative findings checked on the miniature's own results (ddae.findings): the
# pretrained network's grid search beside the same network at epoch 0 (its random initial
# weights, a checkpoint written without training), a linear probe on raw pixels with the same
# protocol, the final linear probe, fine-tuning and the supervised classifier.


rule pixel_probe:
    input:
        train=layout.train_split,
        test=layout.test_split,
    output:
        layout.stage_output("grid", file="pixels"),
    params:
        **layout.stage_params("grid"),
    log:
        "logs/{dataset}/{run}/pixel_probe.log",
    benchmark:
        "logs/{dataset}/{run}/pixel_probe.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/pixel_probe.py"


rule findings:
    input:
        reports.files_in(reports.findings_models()),
    output:
        json="results/findings.json",
        md="results/findings.md",
    params:
        models=reports.findings_models(),
        thresholds=reports.findings.get("thresholds", {}),
        scale=reports.findings.get("scale", ""),
    log:
        "logs/findings.log",
    benchmark:
        "logs/findings.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/findings.py"
