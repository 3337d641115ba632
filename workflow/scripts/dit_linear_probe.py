"""Final DiT linear probe on cached latents at the chosen (layer, t) (paper Tables 3, 4, 6)."""

from ddae.joblog import logging_to
from ddae.latents import dit_linear_probe
from ddae.probing import layer_t_from_grid

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    steps = int(sm.params.steps)
    if sm.input.choice:  # [grid json]: use the grid search's best (layer, t)
        layer, t = layer_t_from_grid(sm.input.choice[0], steps)
    else:  # a fixed choice from the config, e.g. Table 9 (DiT CIFAR-10 12/28, t 121/1000)
        layer, t = int(sm.params.layer_t["layer"]), int(sm.params.layer_t["t"])
    dit_linear_probe(
        checkpoint=sm.input.checkpoint,
        latent_dir=sm.input.latents,
        layer=layer,
        t=t,
        steps=steps,
        config=dict(sm.params.probe),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
