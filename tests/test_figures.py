"""Figures 2–6 build from small synthetic result files into valid PNG and PDF files, and a
missing series is named "(not run)" rather than drawn."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import result_provenance
from PIL import Image

import ddae.report.figures as figures
from ddae.result_files import ResultFileError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def texts(monkeypatch):
    """Every title, label and legend text of the figures saved during a test."""
    seen: list[str] = []
    original = figures.save_figure

    def recording(fig, *args):
        original(fig, *args)  # titles and the source note are set as the figure is saved
        seen.extend(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")))

    monkeypatch.setattr(figures, "save_figure", recording)
    return seen


def check_outputs(png, pdf):
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] > 100 and image.size[1] > 100
    assert pdf.read_bytes().startswith(b"%PDF")


def write_json(path, **values):
    path.write_text(json.dumps({**result_provenance(values), **values}))
    return path


def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def grid(path, steps, ts, layers):
    return write_csv(
        path,
        [
            {
                "layer": k,
                "layer_name": f"b{k}",
                "t": t,
                "steps": steps,
                "sigma": 0.01 * t,
                "test_accuracy": 80 - abs(k - layers // 2) - 0.2 * t,
            }
            for k in range(1, layers + 1)
            for t in ts
        ],
    )


def choice(path, layer, t, steps, accuracy):
    """The grid search's choice file beside its grid CSV."""
    record = {"layer": layer, "layer_name": f"b{layer}", "t": t, "steps": steps}
    return write_json(path.with_suffix(".json"), **record, sigma=0.01 * t, test_accuracy=accuracy)


def test_figure2(tmp_path, texts):
    grids = {
        "DDPM": grid(tmp_path / "ddpm.csv", 1000, [1, 6, 11, 16, 21], 12),
        "EDM": grid(tmp_path / "edm.csv", 18, range(1, 19), 15),
        "DiT": tmp_path / "missing.csv",
    }
    choices = {
        "DDPM": choice(grids["DDPM"], 6, 1, 1000, 79.8),  # the CSV's best cell
        "EDM": choice(grids["EDM"], 3, 11, 18, 70.0),  # not the CSV's best: read, not recomputed
        "DiT": tmp_path / "missing.json",
    }
    figures.figure2(
        grids,
        tmp_path / "f2.png",
        tmp_path / "f2.pdf",
        choices=choices,
        paper={"DDPM": "cifar10_ddpm", "EDM": "cifar10_edm"},
    )
    check_outputs(tmp_path / "f2.png", tmp_path / "f2.pdf")
    assert "DiT (not run)" in texts
    assert "ours best: 6/12, t 1 (79.8%)" in texts
    assert "ours best: 3/15, t 11 (70.0%)" in texts
    assert any(t.startswith("paper (Table 9): 7/12") for t in texts)
    assert any(t.startswith("paper (Table 9): 6/15") for t in texts)


def test_figure2_says_which_probe_made_each_panel(tmp_path, texts):
    """Issue 22, item 7: the smoke run's DDPM grid probes with all labels, its EDM grid with 10
    per class; each panel names its probe and the title warns when they differ."""
    grids = {
        "all": grid(tmp_path / "a.csv", 1000, [1, 6], 4),
        "few": grid(tmp_path / "f.csv", 18, [1, 7], 4),
    }
    choices = {
        "all": choice(grids["all"], 2, 1, 1000, 79.6),
        "few": choice(grids["few"], 2, 1, 18, 79.6),
    }
    for path, config in (
        (choices["all"], {"epochs": 10, "labels_per_class": None}),
        (choices["few"], {"epochs": 200, "labels_per_class": 10}),
    ):
        path.write_text(json.dumps({**json.loads(path.read_text()), "config": config}))
    figures.figure2(grids, tmp_path / "f2.png", tmp_path / "f2.pdf", choices=choices)
    assert "all\n(probe: all labels, 10 epochs)" in texts
    assert "few\n(probe: 10 labels per class, 200 epochs)" in texts
    assert any("the panels' probes differ" in text for text in texts)


def test_figure2_needs_the_grid_searchs_choice_file(tmp_path):
    grids = {"DDPM": grid(tmp_path / "ddpm.csv", 1000, [1, 6], 12)}
    with pytest.raises(ResultFileError, match="choice file"):
        figures.figure2(
            grids, tmp_path / "f.png", tmp_path / "f.pdf", choices={"DDPM": tmp_path / "no.json"}
        )


def test_figure3(tmp_path, texts):
    def csv(name, epoch):
        return write_csv(
            tmp_path / f"{name}{epoch}.csv",
            [
                {
                    "layer": k,
                    "layer_name": f"b{k}",
                    "t": 11,
                    "steps": 1000,
                    "sigma": 0.05,
                    "alignment": 1.0 / (k * epoch / 100),
                    "uniformity": -k * epoch / 1000,
                }
                for k in range(1, 7)
            ],
        )

    series = {
        "DDPM": {150: csv("a", 150), 500: csv("a", 500), 2000: csv("a", 2000)},
        "DDPM++ (DDPM)": {250: csv("b", 250), 500: tmp_path / "gone.csv"},
        "DDPM++ (EDM)": {250: tmp_path / "gone.csv"},
    }
    figures.figure3(series, tmp_path / "f3.png", tmp_path / "f3.pdf", layers={"DDPM": [2, 4]})
    check_outputs(tmp_path / "f3.png", tmp_path / "f3.pdf")
    assert "DDPM++ (EDM) (not run)" in texts
    assert any("epochs [500] (not run)" in t for t in texts)
    assert "layer 2/6" in texts and "layer 1/6" not in texts[: texts.index("layer 2/6")]


def test_figure3_says_why_its_values_are_near_zero(tmp_path, texts):
    """Issue 22, item 3: the smoke run's EDM panel (alignment ~1e-8, uniformity -0.005 to -0.06
    at t = 1/18, sigma 0.002) says in the panel why; spread features get no note."""

    def csv(name, alignment, uniformity, sigma):
        rows = [
            {"layer": k, "layer_name": f"b{k}", "t": 1, "steps": 18, "sigma": sigma}
            | {"alignment": alignment * k, "uniformity": uniformity * k}
            for k in (1, 2)
        ]
        return write_csv(tmp_path / f"{name}.csv", rows)

    series = {
        "collapsed": {2: csv("c2", 1e-8, -0.005, 0.002), 4: csv("c4", 2e-8, -0.03, 0.002)},
        "spread": {2: csv("s", 0.4, -1.5, 0.5)},
    }
    figures.figure3(series, tmp_path / "f3.png", tmp_path / "f3.pdf")
    notes = [text for text in texts if "Uniformity >" in text or "Alignment <" in text]
    assert len(notes) == 1, notes
    flat = notes[0].replace("\n", " ")
    assert "features of different images nearly coincide" in flat
    assert "at t = 1/18 (σ = 0.002) the two noisings of an image" in flat


def test_figure4(tmp_path, texts):
    def point(name, epoch, fid, acc):
        return {
            "epoch": epoch,
            "fid": write_json(tmp_path / f"{name}-fid{epoch}.json", fid=fid),
            "linear": write_json(tmp_path / f"{name}-lin{epoch}.json", test_accuracy=acc),
        }

    series = {
        "T=1000": [point("a", e, 30 / (e / 150), 80 + e / 200) for e in (150, 500, 2000)],
        "T=64": [
            point("b", 150, 200.0, 84.0),
            {"epoch": 500, "fid": tmp_path / "x.json", "linear": tmp_path / "y.json"},
        ],
        "β upper half": [],
    }
    figures.figure4(series, tmp_path / "f4.png", tmp_path / "f4.pdf")
    check_outputs(tmp_path / "f4.png", tmp_path / "f4.pdf")
    assert any(t.endswith("not run: β upper half") for t in texts)  # in the title
    assert not any(t.startswith("β upper half") for t in texts)  # no legend entry without a point
    assert "T=64 (1 checkpoint(s) not run)" in texts


def test_figures_4_and_5_say_which_samples_score_as_noise(tmp_path, texts):
    """Issue 22, item 4: with the FID of Gaussian-noise images recorded (`noise_fid`), the
    noise level is a dotted line and the runs whose samples score as noise say so."""

    def point(name, epoch, fid):
        fid_file = write_json(tmp_path / f"{name}{epoch}.json", fid=fid, noise_fid=4.47)
        linear = write_json(tmp_path / f"{name}{epoch}l.json", test_accuracy=60.0)
        return {"epoch": epoch, "fid": fid_file, "linear": linear}

    series = {"T=1000": [point("a", 1, 4.76), point("a", 2, 1.2)], "EDM": [point("b", 4, 0.68)]}
    figures.figure4(series, tmp_path / "f4.png", tmp_path / "f4.pdf")
    assert "T=1000: samples of epoch 1 score as noise" in texts and "EDM" in texts
    assert "Gaussian-noise images (FID 4.47)" in texts
    panels = {
        "digits": {
            "models": {
                "DDPM": {"fid": series["T=1000"][0]["fid"], "linear": series["T=1000"][0]["linear"]}
            }
        }
    }
    figures.figure5(panels, tmp_path / "f5.png", tmp_path / "f5.pdf")
    assert any(t.startswith("DDPM") and t.endswith(": samples score as noise") for t in texts)


def test_figure5(tmp_path, texts):
    def model(name, fid, linear, finetune=None):
        files = {
            "fid": write_json(tmp_path / f"{name}-fid.json", fid=fid),
            "linear": write_json(tmp_path / f"{name}-lin.json", test_accuracy=linear),
            "scratch": tmp_path / f"{name}-missing.json",
        }
        if finetune is not None:
            files["finetune"] = write_json(tmp_path / f"{name}-ft.json", test_accuracy=finetune)
        return files

    panels = {
        "CIFAR-10": {
            "models": {
                "DDPM": {**model("d", 3.2, 88.0), "paper": "cifar10_ddpm"},
                "EDM": {**model("e", 2.1, 95.0, 97.0), "paper": "cifar10_edm"},
            },
            "wrn": write_json(tmp_path / "wrn.json", test_accuracy=96.0),
            "wrn_label": "WRN-28-10",
            "paper_wrn": "cifar10_wrn",
        },
        "Tiny-ImageNet": {
            "models": {"EDM": {"fid": tmp_path / "nothing.json"}},
            "wrn": tmp_path / "nothing.json",
            "wrn_label": "WRN-16-4",
        },
    }
    source = "Data: cifar10 at 32 px: cifar10_edm (ddpmpp, official edm, epoch 4000)"
    figures.figure5(panels, tmp_path / "f5.png", tmp_path / "f5.pdf", source=source)
    check_outputs(tmp_path / "f5.png", tmp_path / "f5.pdf")
    assert "EDM fine-tune (paper)" in texts  # the paper states EDM's FID 2.0 and 97.2%
    assert "Tiny-ImageNet\nnot run: EDM FID, WRN-16-4" in texts  # named in the panel
    assert "WRN-28-10 (ours)" in texts  # the network by what it is (its config)
    assert "CIFAR-10\nnot run: DDPM scratch, EDM scratch" in texts
    assert not any("(not run)" in t for t in texts)  # no legend entry without a point
    assert "WideResNet-28-10 (paper)" in texts
    assert source in texts


def test_figure5_keeps_the_papers_inception_fids_off_a_stand_in_axis(tmp_path, texts):
    fid = write_json(tmp_path / "fid.json", fid=150.0, extractor="random_conv")
    linear = write_json(tmp_path / "linear.json", test_accuracy=60.0)
    panels = {"digits": {"models": {"EDM": {"fid": fid, "linear": linear, "paper": "cifar10_edm"}}}}
    figures.figure5(panels, tmp_path / "f5.png", tmp_path / "f5.pdf")
    assert "EDM linear probe" in texts
    assert not any(t.endswith("(paper)") and "WideResNet" not in t for t in texts)
    assert any("paper's Inception-FID points left out" in t for t in texts)


def test_figure_legends_sit_under_the_axes(tmp_path, monkeypatch):
    wrn = write_json(tmp_path / "wrn.json", test_accuracy=96.0)
    panels = {"CIFAR-10": {"models": {}, "wrn": wrn, "paper_wrn": "cifar10_wrn"}}
    boxes = []
    original = figures.save_figure

    def recording(fig, *args):
        fig.canvas.draw()
        ax = fig.axes[0]
        boxes.append((ax.get_legend().get_window_extent(), ax.get_window_extent()))
        original(fig, *args)

    monkeypatch.setattr(figures, "save_figure", recording)
    figures.figure5(panels, tmp_path / "f5.png", tmp_path / "f5.pdf")
    legend, axes = boxes[0]
    assert legend.y1 < axes.y0  # the dashed WideResNet line cannot be covered


def test_a_tall_legend_keeps_clear_of_the_source_footer(tmp_path, monkeypatch):
    """Issue 22 item 6: Figure 5's seven-entry legend ran into its three-line source footer."""
    fid = write_json(tmp_path / "fid.json", fid=4.3, extractor="random_conv")
    accuracy = write_json(tmp_path / "acc.json", test_accuracy=60.0)
    model = {"fid": fid, "linear": accuracy, "finetune": accuracy, "scratch": accuracy}
    wrn = write_json(tmp_path / "wrn.json", test_accuracy=58.0)
    panels = {
        "digits": {
            "models": {"digits_ddpm": model, "digits_ddpmpp_edm": model},
            "wrn": wrn,
            "wrn_label": "WRN-10-1",
        }
    }
    source = "Data: digits at 16 px: " + ", ".join(
        f"digits_run{k} (ddpmpp, trained here, checkpoints at epoch 2, 4)" for k in range(4)
    )
    boxes = []
    original = figures.save_figure

    def recording(fig, *args):
        original(fig, *args)  # the footer is placed, and the figure grown, as it is saved
        renderer = fig.canvas.get_renderer()
        boxes.append(
            (
                fig.axes[0].get_legend().get_window_extent(renderer),
                fig._supxlabel.get_window_extent(renderer),
            )
        )

    monkeypatch.setattr(figures, "save_figure", recording)
    figures.figure5(panels, tmp_path / "f5.png", tmp_path / "f5.pdf", source=source)
    legend, footer = boxes[0]
    assert legend.y0 > footer.y1


def test_figure4_prints_its_log_axis_in_plain_numbers(tmp_path, monkeypatch):
    """Issue 22 item 6: a FID axis within one decade printed its ticks as "4.2×10⁰"."""
    points = [
        {
            "epoch": epoch,
            "fid": write_json(tmp_path / f"fid{epoch}.json", fid=fid, extractor="random_conv"),
            "linear": write_json(tmp_path / f"lin{epoch}.json", test_accuracy=60.0 + epoch),
        }
        for epoch, fid in ((1, 4.78), (2, 4.22))
    ]
    labels = []
    original = figures.save_figure

    def recording(fig, *args):
        original(fig, *args)
        axis = fig.axes[0].xaxis
        labels.extend(t.get_text() for t in axis.get_ticklabels(minor=True) + axis.get_ticklabels())

    monkeypatch.setattr(figures, "save_figure", recording)
    figures.figure4({"T = 1000": points}, tmp_path / "f4.png", tmp_path / "f4.pdf")
    shown = [label for label in labels if label]
    assert shown and all("10^" not in label and "times" not in label for label in shown)
    assert {"4.2", "4.5"} & set(shown) or {"4.3", "4.4"} & set(shown), shown


def test_figure6(tmp_path, texts):
    def curve(name, shift):
        return write_csv(
            tmp_path / f"{name}.csv",
            [
                {"t": t, "steps": 1000, "sigma": 0.01 * 1.5**t, "test_accuracy": 95 - shift - 3 * t}
                for t in range(1, 20)
            ],
        )

    panels = {
        "VP: DDPM vs WideResNet": {
            "DDAE (DDPM) MLP head": curve("a", 0),
            "WideResNet-28-10 (VP)": curve("b", 5),
        },
        "VE: EDM vs WideResNet": {
            "DDAE (EDM) MLP head": tmp_path / "missing.csv",
            "WideResNet-28-10 (VE)": curve("c", 5),
        },
    }
    figures.figure6(panels, tmp_path / "f6.png", tmp_path / "f6.pdf")
    check_outputs(tmp_path / "f6.png", tmp_path / "f6.pdf")
    assert "VE: EDM vs WideResNet\nnot run: DDAE (EDM) MLP head" in texts


def test_figure6_does_not_zoom_a_chance_band_into_a_curve(tmp_path, monkeypatch):
    """The smoke run's classifiers at chance (10.0-10.55 %) looked like a curve on an autoscaled
    axis (issue 22): the axis spans 0-100 % whatever the data."""
    chance = write_csv(
        tmp_path / "chance.csv",
        [
            {"t": t, "steps": 18, "sigma": 0.002 * 2**t, "test_accuracy": 10.0 + 0.55 * (t % 2)}
            for t in range(1, 19)
        ],
    )
    limits = []
    original = figures.save_figure

    def recording(fig, *args):
        limits.extend(ax.get_ylim() for ax in fig.axes)
        original(fig, *args)

    monkeypatch.setattr(figures, "save_figure", recording)
    figures.figure6({"VE": {"head": chance}}, tmp_path / "f6.png", tmp_path / "f6.pdf")
    assert limits == [(0.0, 100.0)]


def test_figure3_arrows_point_from_each_checkpoint_to_the_next(tmp_path, monkeypatch):
    rows = {
        epoch: write_csv(
            tmp_path / f"e{epoch}.csv",
            [
                {"layer": k, "layer_name": f"b{k}", "t": 11, "steps": 1000, "sigma": 0.05}
                | {"alignment": 2.0 - epoch / 1000, "uniformity": -k - epoch / 1000}
                for k in (1, 2)
            ],
        )
        for epoch in (250, 500, 1000)
    }
    arrows = []
    original = figures.save_figure

    def recording(fig, *args):
        for note in fig.axes[0].texts:
            if getattr(note, "arrow_patch", None) is not None:
                arrows.append((note.xyann, note.xy))
        original(fig, *args)

    monkeypatch.setattr(figures, "save_figure", recording)
    figures.figure3({"DDPM": rows}, tmp_path / "f3.png", tmp_path / "f3.pdf")
    assert len(arrows) == 2 * 2  # two layers, three checkpoints each
    # every arrow runs towards the later checkpoint (alignment falls with the epoch here)
    assert all(end[1] < start[1] for start, end in arrows)
