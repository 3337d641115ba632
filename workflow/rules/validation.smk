# The validation target (issue 24): `snakemake --cores all results/validation.md` checks the
# paper's headline numbers from the official checkpoints, PASS/FAIL per number with its
# tolerance (ddae.validation): the EDM and DDPM checkpoints' linear probes at Table 9's pairs
# with Table 6's protocol, and the EDM checkpoint's FID. No grid search, fine-tuning or
# pretraining: the probes are rule linear_probe at a pair named in the path
# (linear/layer<L>_t<T>/epoch<E>.json, ddae.probe_pairs), the FID is Table 2's sample_fid job.
# A run's own probe (Tables 2-3) at the same pair, fixed or chosen by its grid, reuses the
# named-pair result instead of probing again, and the reverse.

from ddae.probe_pairs import named_pair_pattern


include: "common_validation.smk"


localrules:
    validation,


use rule linear_probe as linear_probe_at_pair with:
    input:
        unpack(source_files),
        checkpoint=checkpoint_input,
        choice=[],  # the pair is the path's, never a grid search's
    output:
        json=named_pair_pattern(stage_output("linear_probe")),
        metrics=named_pair_pattern(stage_output("linear_probe", ".metrics.jsonl")),
    wildcard_constraints:
        layer=r"\d+",
        t=r"\d+",
    params:
        probe=lambda wildcards: evaluation_stage(wildcards, "linear_probe"),
        layer_t=lambda wildcards: {"layer": int(wildcards.layer), "t": int(wildcards.t)},
        steps=evaluation_steps,
    log:
        "logs/{dataset}/{run}/linear_probe_layer{layer}_t{t}_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/linear_probe_layer{layer}_t{t}_epoch{epoch}.benchmark.tsv"


rule validation:
    input:
        unpack(validation_results),
    output:
        md="results/validation.md",
        json="results/validation.json",
    params:
        plan=lambda wildcards: planned_validation(),
        benchmarks=lambda wildcards: validation_benchmarks(),
    log:
        "logs/validation.log",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/validation.py"
