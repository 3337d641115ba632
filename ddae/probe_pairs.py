"""Linear probes at a named (layer, t) pair beside a run's own probe (paper Table 6 at Table 9's
pairs; issue 24's validation target).

A run's own linear probe, ``results/<dataset>/<run>/linear/epoch<E>.json``, sits at the pair its
config names: the grid search's choice (``layer_t: grid``, Appendix B) or a fixed one; Tables
2–4 read it. A probe at a pair named in its path, ``linear/layer<L>_t<T>/epoch<E>.json``, is the
same job (rule ``linear_probe``, run as ``linear_probe_at_pair`` in
workflow/rules/validation.smk) at that pair whatever the config says; the validation target
probes the official checkpoints at Table 9's pairs this way, without a grid search. The path
says which pair source was used, so a grid that later chooses another pair is never confused
with it, and the tables never read a named-pair file.

When the two are the same computation, one job reuses the other's result instead of probing
again (`reuse_probe`): same checkpoint file, layer, t and steps, same normalised probe config,
same data files and the same device type and fast-path switches (``ran_with``). So a grid
that chooses Table 9's pair gives Tables 2–3 the validation's probe (and the reverse), with a
``reused_from`` entry naming the file it came from. Delete both files to probe again.

`probe_or_reuse` is the rule's one call. The path helpers are pure Python (the rules read
them while Snakemake plans: this module imports no torch, numpy or pandas); `probe_identity`
and `probe_or_reuse` import torch when called.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddae.result_files import ResultFileError, read_result_json
from ddae.result_writers import write_json

log = logging.getLogger(__name__)

NAMED_PAIR_FOLDER = "layer{layer}_t{t}"
_NAMED_PAIR = re.compile(r"layer(\d+)_t(\d+)")
METRICS_SUFFIX = ".metrics.jsonl"  # the probe's per-epoch history beside its JSON


def named_pair_pattern(own: str) -> str:
    """The named-pair path (or wildcard pattern) of a run's own probe path: ``.../linear/
    epoch{epoch}.json`` → ``.../linear/layer{layer}_t{t}/epoch{epoch}.json``."""
    folder, name = own.rsplit("/", 1)
    return f"{folder}/{NAMED_PAIR_FOLDER}/{name}"


def sibling_probe(path: str | Path, layer: int, t: int) -> Path:
    """The other probe file of the same checkpoint at (layer, t): the named-pair file beside a
    run's own probe, or the run's own probe above a named-pair file."""
    path = Path(path)
    if _NAMED_PAIR.fullmatch(path.parent.name):
        return path.parent.parent / path.name
    return path.parent / NAMED_PAIR_FOLDER.format(layer=layer, t=t) / path.name


def metrics_path(probe_json: str | Path) -> Path:
    path = Path(probe_json)
    return path.with_name(path.name.removesuffix(".json") + METRICS_SUFFIX)


def probe_identity(
    checkpoint: str,
    files: Mapping[str, str],
    layer: int,
    t: int,
    steps: int,
    probe: Mapping[str, Any],
    device: str,
) -> dict[str, Any]:
    """What `ddae.probing.linear_probe` would record about the computation it runs (its
    result's keys): two probes with equal identities compute the same thing."""
    from ddae.configs import from_mapping, to_mapping
    from ddae.settings.probes import LinearProbeConfig

    config = from_mapping(LinearProbeConfig, probe, "probe")
    identity = {
        "checkpoint": str(checkpoint),
        "layer": int(layer),
        "t": int(t),
        "steps": int(steps),
        **{key: str(value) for key, value in files.items()},
        "config": to_mapping(config),
        "ran_with": config.fast_path(device).record(device),
    }
    return json.loads(json.dumps(identity))  # as a JSON file holds it (lists, not tuples)


def reuse_probe(out_json: str | Path, candidate: str | Path, identity: Mapping[str, Any]) -> bool:
    """Copy ``candidate`` (a probe result and its metrics log) to ``out_json`` when it exists and
    records the same computation (`probe_identity`); False when it does not."""
    candidate, out_json = Path(candidate), Path(out_json)
    if not (candidate.is_file() and metrics_path(candidate).is_file()):
        return False
    try:
        record = read_result_json(candidate, "accuracy")
    except ResultFileError as error:
        log.warning("not reusing %s: %s", candidate, error)
        return False
    differing = sorted(key for key, value in identity.items() if record.get(key) != value)
    if differing:
        log.info("not reusing %s: it differs in %s", candidate, ", ".join(differing))
        return False
    metrics = metrics_path(out_json)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics_path(candidate), metrics)
    write_json(out_json, {**record, "reused_from": str(candidate)})
    log.info(
        "%s: the same probe as %s (%.2f%%), reused", out_json, candidate, record["test_accuracy"]
    )
    return True


def probe_or_reuse(
    checkpoint: str,
    source: Any,
    layer: int,
    t: int,
    steps: int,
    config: Mapping[str, Any],
    out_json: str | Path,
    metrics_path: str | Path,
    device: str,
) -> None:
    """Rule ``linear_probe`` (and ``linear_probe_at_pair``): reuse the probe at the same pair
    beside ``out_json`` (`sibling_probe`) when it is the same computation (`reuse_probe`), else
    run `ddae.probing.linear_probe` on ``source`` (a `ddae.sources` source)."""
    identity = probe_identity(checkpoint, source.record(), layer, t, steps, config, device)
    if reuse_probe(out_json, sibling_probe(out_json, layer, t), identity):
        return
    from ddae.probing.linear_probe import linear_probe

    linear_probe(
        checkpoint=checkpoint,
        source=source,
        layer=layer,
        t=t,
        steps=steps,
        config=dict(config),
        out_json=out_json,
        metrics_path=metrics_path,
        device=device,
    )
