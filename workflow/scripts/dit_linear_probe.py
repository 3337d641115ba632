"""Final DiT linear probe on cached latents at the chosen (layer, t) (paper Tables 3, 4, 6)."""

from ddae.joblog import logging_to
from ddae.latents import dit_linear_probe
from ddae.probing import resolve_layer_t

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    # [grid json]: the grid search's best (layer, t); else the config's, e.g. Table 9
    layer, t, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
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
