# Training classifiers (paper Sec. 4.1, Tables 7-8, Figure 5): the pretrained encoder truncated
# after the chosen decoder block and fine-tuned with clean images at a fixed timestep, the same
# truncated encoder trained from random initialisation ("scratch"), and the supervised
# WideResNet-28-10 reference. Multi-GPU jobs run under torchrun like pre-training; partial
# state lives outside the declared outputs so an interrupted job resumes.


rule finetune:
    input:
        unpack(source_files),
        checkpoint=checkpoint_input,
        choice=layer_t_choice,
    output:
        json=stage_output("finetune"),
        metrics=stage_output("finetune", ".metrics.jsonl"),
    params:
        model={"kind": "pretrained"},  # ddae.finetune.MODELS; checkpoint, layer, t: the inputs
        training=lambda wildcards: evaluation_stage(wildcards, "finetune"),
        layer_t=fixed_layer_t,
        steps=evaluation_steps,
        state_dir=lambda wildcards: partial_state(wildcards, f"finetune_epoch{wildcards.epoch}"),
    resources:
        gpu=training_gpus,
        gpu_slot=lambda wildcards: min(training_gpus(wildcards), 1),
    log:
        "logs/{dataset}/{run}/finetune_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/finetune_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/classifier.py"


rule scratch:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        test=lambda wildcards: dataset_split(wildcards.dataset, "test"),
        choice=layer_t_choice,
    output:
        json=stage_output("scratch"),
        metrics=stage_output("scratch", ".metrics.jsonl"),
    params:
        model=lambda wildcards: {
            "kind": "scratch",
            "run": {key: pretraining_run(wildcards)[key] for key in ("network", "framework")},
        },
        training=lambda wildcards: evaluation_stage(wildcards, "scratch"),
        layer_t=fixed_layer_t,
        steps=evaluation_steps,
        state_dir=lambda wildcards: partial_state(wildcards, "scratch"),
    resources:
        gpu=training_gpus,
        gpu_slot=lambda wildcards: min(training_gpus(wildcards), 1),
    log:
        "logs/{dataset}/{run}/scratch.log",
    benchmark:
        "logs/{dataset}/{run}/scratch.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/classifier.py"


rule supervised_wrn:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        test=lambda wildcards: dataset_split(wildcards.dataset, "test"),
    output:
        json="results/{dataset}/baselines/wrn.json",
        metrics="results/{dataset}/baselines/wrn.metrics.jsonl",
    params:
        model=lambda wildcards: {
            "kind": "wide_resnet",
            "network": supervised_baseline(wildcards)["network"],
        },
        training=lambda wildcards: supervised_baseline(wildcards)["training"],
        layer_t=None,
        steps=None,
        state_dir="results/{dataset}/baselines/partial/wrn",
    resources:
        gpu=lambda wildcards: supervised_baseline(wildcards)["gpus"],
        gpu_slot=lambda wildcards: min(supervised_baseline(wildcards)["gpus"], 1),
    log:
        "logs/{dataset}/supervised_wrn.log",
    benchmark:
        "logs/{dataset}/supervised_wrn.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/classifier.py"
