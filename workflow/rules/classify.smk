# Training classifiers (paper Sec. 4.1, Tables 7-8, Figure 5): the pretrained encoder truncated
# after the chosen decoder block and fine-tuned with clean images at a fixed timestep, the same
# truncated encoder trained from random initialisation ("scratch"), and the supervised
# WideResNet-28-10 reference. Multi-GPU jobs run under torchrun like pre-training; partial
# state lives outside the declared outputs so an interrupted job resumes.


rule finetune:
    input:
        unpack(layout.source_files),
        checkpoint=layout.checkpoint_input,
        choice=layout.layer_t_choice,
    output:
        json=layout.stage_output("finetune"),
        metrics=layout.stage_output("finetune", ".metrics.jsonl"),
    params:
        model={"kind": "pretrained"},  # ddae.finetune.MODELS; checkpoint, layer, t: the inputs
        **layout.stage_params("finetune"),
        layer_t=layout.fixed_layer_t,
        steps=layout.evaluation_steps,
        state_dir=layout.partial_state("finetune_epoch{epoch}"),
    resources:
        gpu=layout.training_gpus,
        gpu_slot=layout.training_gpu_slot,
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
        train=layout.train_split,
        test=layout.test_split,
        choice=layout.layer_t_choice,
    output:
        json=layout.stage_output("scratch"),
        metrics=layout.stage_output("scratch", ".metrics.jsonl"),
    params:
        model=lambda wildcards: {
            "kind": "scratch",
            "run": {k: layout.pretraining_run(wildcards)[k] for k in ("network", "framework")},
        },
        **layout.stage_params("scratch"),
        layer_t=layout.fixed_layer_t,
        steps=layout.evaluation_steps,
        state_dir=layout.partial_state("scratch"),
    resources:
        gpu=layout.training_gpus,
        gpu_slot=layout.training_gpu_slot,
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
        train=layout.train_split,
        test=layout.test_split,
    output:
        json="results/{dataset}/baselines/wrn.json",
        metrics="results/{dataset}/baselines/wrn.metrics.jsonl",
    params:
        model=lambda wildcards: {
            "kind": "wide_resnet",
            "network": layout.supervised_baseline(wildcards)["network"],
        },
        training=lambda wildcards: layout.supervised_baseline(wildcards)["training"],
        layer_t=None,
        steps=None,
        state_dir="results/{dataset}/baselines/partial/wrn",
    resources:
        gpu=lambda wildcards: layout.supervised_baseline(wildcards)["gpus"],
        gpu_slot=lambda wildcards: min(layout.supervised_baseline(wildcards)["gpus"], 1),
    log:
        "logs/{dataset}/supervised_wrn.log",
    benchmark:
        "logs/{dataset}/supervised_wrn.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/classifier.py"
