"""Paper-shape fidelity (issue 11): the settings of the paper-scale config.yaml, checked without
compute — DiT's layer numbering against Tables 3-4's encoder sizes, Table 9's comparison, and
Figure 4's probe protocol in the planned DAG."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ddae.networks.dit import DiT, DiTEncoder
from ddae.report import table9


def test_dit_truncated_encoder_sizes_pin_the_papers_layer_numbering():
    """Table 3's DiT encoder is 314M and Table 4's 338M: 13 and 14 blocks of 23,905,152 plus the
    3,091,968 embedding parameters. So the paper's 0-based "12/28" is 13 blocks deep (layer 13
    here, blocks.12) and "13/28" is 14 (layer 14, blocks.13); 12 blocks would be 290M."""
    with torch.device("meta"):
        dit = DiT(DiT.Config())
    block = sum(p.numel() for p in dit.blocks[0].parameters())
    embeddings = sum(
        p.numel() for n, p in dit.named_parameters() if not n.startswith(("blocks", "final_layer"))
    )
    assert (block, embeddings) == (23_905_152, 3_091_968)

    def size(layer: int) -> int:
        return sum(p.numel() for p in DiTEncoder(dit, layer).parameters())

    assert size(13) == 3_091_968 + 13 * 23_905_152 == 313_858_944  # Table 3: 314M
    assert size(14) == 3_091_968 + 14 * 23_905_152 == 337_764_096  # Table 4: 338M
    assert size(12) == 289_953_792  # what reading "12/28" as 12 blocks would give
    assert DiTEncoder(dit, 13).layer_name == dit.decoder_blocks()[12][0] == "blocks.12"


def _grid(tmp_path, layer: int, t: int) -> str:
    rows = [
        {
            "layer": k,
            "layer_name": f"blocks.{k - 1}",
            "t": tt,
            "steps": 1000,
            "sigma": 0.1,
            "test_accuracy": 90.0 if (k, tt) == (layer, t) else 10.0,
        }
        for k in range(1, 29)
        for tt in (92, 122)
    ]
    path = tmp_path / f"grid_{layer}_{t}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("layer", "t", "matches"), [(13, 122, True), (12, 92, False), (13, 92, False)]
)
def test_table9_reads_the_papers_dit_numbers_as_zero_based(tmp_path, layer, t, matches):
    """Table 9's DiT "12/28, t = 121" is blocks.12 and ᾱ index 121: layer 13, t = 122 here."""
    grid = _grid(tmp_path, layer, t)
    frame = table9([{"label": "CIFAR-10 DiT", "grid": grid, "paper": "cifar10_dit"}])
    got = dict(zip(frame["quantity"], frame["matches"], strict=True))
    assert got["layer"] is (layer == 13)
    assert got["timestep"] is (t == 122)
    assert (got["layer"] and got["timestep"]) is matches
    assert "blocks.12 = 13/28 here" in frame.loc[frame["quantity"] == "layer", "paper"].iloc[0]
    assert "122/1000 here" in frame.loc[frame["quantity"] == "timestep", "paper"].iloc[0]
