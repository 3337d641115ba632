# The paper's qualitative findings checked on the miniature's own results (ddae.findings): the
# pretrained network's grid search beside the same network at epoch 0 (its random initial
# weights, a checkpoint written without training), a linear probe on raw pixels with the same
# protocol, the final linear probe, fine-tuning and the supervised classifier.


include: "common_findings.smk"


rule pixel_probe:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        test=lambda wildcards: dataset_split(wildcards.dataset, "test"),
    output:
        "results/{dataset}/{run}/grid/pixels.json",
    params:
        probe=lambda wildcards: evaluation_stage(wildcards, "grid"),
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
        files_in(findings_models()),
    output:
        json="results/findings.json",
        md="results/findings.md",
    params:
        models=findings_models(),
        thresholds=FINDINGS.get("thresholds", {}),
        scale=FINDINGS.get("scale", ""),
    log:
        "logs/findings.log",
    benchmark:
        "logs/findings.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/findings.py"
