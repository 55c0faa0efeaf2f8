"""Run comparison tables and loss-curve figures, from hand-written run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from cartoondiff import attributes, figures, report
from cartoondiff.figures.charts import ema
from cartoondiff.runs.errors import UserError
from tests.conftest import REPO, TINY


def fake_run(root: Path, group: str, seed: int, losses: list[float],
             evals: dict[int, dict[str, float]]) -> Path:
    """A run directory as run.py leaves it: config.yaml and metrics.jsonl (10 steps/epoch)."""
    run = root / f"{group}_s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"seed: {seed}\nlogger:\n  group: {group}\n")
    rows = [{"step": 0, "parameters": 10}]
    rows += [{"step": 5 * (i + 1), "train/loss": v, "train/epoch": 0.5 * (i + 1)}
             for i, v in enumerate(losses)]
    rows += [{"step": step, **{f"eval/{k}": v for k, v in ev.items()}}
             for step, ev in evals.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


@pytest.fixture
def runs(tmp_path):
    return [
        fake_run(tmp_path, "onehot", 0, [1.0, 0.5, 0.2, 0.1], {20: {"hair_color": 0.5}}),
        fake_run(tmp_path, "onehot", 1, [1.0, 0.5, 0.2, 0.3], {20: {"hair_color": 0.7}}),
        fake_run(tmp_path, "raw", 0, [1.0, 0.6, 0.4, 0.4], {20: {"hair_color": 0.1}}),
    ]


def test_table_groups_seeds_and_reports_mean_and_sd(runs):
    table = report.main([str(r) for r in runs] + ["keys=hair_color", "loss_tail=0.25"])
    lines = table.splitlines()
    assert lines[0] == "| experiment | seeds | final loss | hair_color (last, ep2) |"
    # onehot: last-quarter losses 0.1 and 0.3 -> 0.2 ± 0.1414; hair 0.5, 0.7 -> 0.6 ± 0.141
    assert lines[2] == "| onehot | 0,1 | 0.2000 ± 0.1414 | 0.600 ± 0.141 |"
    assert lines[3] == "| raw | 0 | 0.4000 | 0.100 |"


def test_table_shows_each_keys_last_epoch_or_every_epoch(tmp_path):
    runs = [fake_run(tmp_path, "long", 0, [1.0, 0.5], {20: {"hair_color": 0.5},
                                                      40: {"hair_color": 0.8}}),
            fake_run(tmp_path, "short", 0, [1.0, 0.6], {20: {"hair_color": 0.1}})]
    lines = report.main([*map(str, runs), "keys=hair_color"]).splitlines()
    # the runs' last evaluations differ (ep4, ep2): the cells name their epoch
    assert lines[0] == "| experiment | seeds | final loss | hair_color (last) |"
    assert lines[2].endswith("| 0.800 (ep4) |") and lines[3].endswith("| 0.100 (ep2) |")
    lines = report.main([*map(str, runs), "keys=hair_color", "epochs=all"]).splitlines()
    assert lines[0].endswith("| hair_color ep2 | hair_color ep4 |")
    assert lines[3].endswith("| 0.100 | - |")
    with pytest.raises(UserError, match="epochs='every' is invalid: expected last or all"):
        report.main([*map(str, runs), "epochs=every"])


def test_table_adds_the_final_evaluation_json(runs):
    for run, hair in zip(runs, (0.4, 0.6, 0.2), strict=True):
        setting = {"sampler": "ddim", "steps": 25, "guidance": 2.0, "metrics": {"hair_color": hair}}
        (run / "eval.json").write_text(json.dumps({"runs": [setting]}))
    table = report.main([str(r) for r in runs] + ["keys=hair_color", "final=eval.json"])
    assert table.splitlines()[0].endswith("| hair_color (last, ep2) | hair_color final |")
    assert table.splitlines()[2].endswith("| 0.500 ± 0.141 |")
    (runs[2] / "eval.json").unlink()  # not evaluated yet
    assert report.main([str(r) for r in runs] + ["keys=hair_color", "final=eval.json"]
                       ).splitlines()[3].endswith("| 0.100 | - |")
    (runs[2] / "eval.json").write_text("{not json")
    with pytest.raises(UserError, match="raw_s0/eval.json: not an evaluation JSON"):
        report.main([str(r) for r in runs] + ["final=eval.json"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """A real sweep folder as ``python run.py -m`` leaves it: two experiments of two seeds,
    evaluated after each of 3 epochs, with what a launcher adds beside the runs."""
    folder = tmp_path_factory.mktemp("multirun") / "2026-12-01" / "10-00-00"
    cmd = [sys.executable, "run.py", "-m", "attention=single,mha4", "seed=0,1", *TINY,
           "data.n=16", "trainer.max_steps=6", "evaluate.every_epochs=1", "evaluate.n=4",
           "evaluate.classifier.epochs=1", f"data.cache_dir={cache_dir}",
           f"hydra.sweep.dir={folder}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (folder / ".submitit").mkdir()  # a launcher's logs (submitit), not a run
    (folder / "sweep.log").write_text("launched 4 jobs\n")
    return folder


def test_every_command_takes_a_sweeps_glob(sweep, tmp_path, caplog):
    """report, curves, loss_quality and compare on multirun/DATE/TIME/* (as the shell lists
    it, and with the hidden .submitit too): what is not a run is passed over, named."""
    listed = subprocess.run(f"{sys.executable} -m cartoondiff.report {sweep}/* keys=hair_color",
                            shell=True, cwd=REPO, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "| experiment | seeds | final loss | hair_color (last, ep3) |"
    assert [line.split(" | ")[:2] for line in lines[2:]] == [
        ["| attention=single", "0,1"], ["| attention=mha4", "0,1"]]
    assert listed.stderr.splitlines() == [f"{sweep / name} is not a run folder: passed over"
                                          for name in ("multirun.yaml", "sweep.log")]
    everything = sorted(map(str, sweep.iterdir()))
    with caplog.at_level("WARNING"):
        wide = report.main([*everything, "keys=hair_color", "epochs=all"])
    assert wide.splitlines()[0].endswith("| hair_color ep1 | hair_color ep2 | hair_color ep3 |")
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"{sweep / name} is not a run folder: passed over"
        for name in (".submitit", "multirun.yaml", "sweep.log")]
    curves = svg_series(figures.main(["curves", *everything, f"out={tmp_path / 'c.svg'}"]))
    assert list(curves) == ["attention=single (mean ± sd of 2 seeds)",
                            "attention=mha4 (mean ± sd of 2 seeds)"]
    quality = svg_series(figures.main(["loss_quality", *everything, f"out={tmp_path / 'q.svg'}"]))
    assert [len(points) for points in quality.values()] == [3, 3]  # epochs 1, 2, 3
    both = figures.main(["compare", *everything, f"out={tmp_path / 'c.png'}"])
    one = figures.main(["grid", str(sweep / "0_attention=single,seed=0"),
                        f"out={tmp_path / 'g.png'}"])
    assert Image.open(both).width > 4 * Image.open(one).width


def test_a_path_meant_as_a_run_that_is_none_stops_the_command(sweep, tmp_path):
    everything = sorted(map(str, sweep.iterdir()))
    with pytest.raises(UserError, match="10-00-00: no metrics.jsonl"):
        report.main([str(sweep)])  # one folder given alone was meant as a run
    broken = tmp_path / "4_attention=none"  # a run's config, its metrics lost
    broken.mkdir()
    (broken / "config.yaml").write_text("seed: 0\n")
    for command in (report.main, lambda a: figures.main(["curves", *a])):
        with pytest.raises(UserError, match="4_attention=none: no metrics.jsonl"):
            command([*everything, str(broken)])
        with pytest.raises(UserError, match="typo: no metrics.jsonl"):
            command([*everything, str(tmp_path / "typo")])
    with pytest.raises(UserError, match="none of the 2 paths given is a run folder"):
        report.main([str(sweep / "multirun.yaml"), str(sweep / ".submitit")])


def test_table_errors_name_the_directory(tmp_path):
    with pytest.raises(UserError, match="not_a_run: no metrics.jsonl"):
        report.main([str(tmp_path / "not_a_run")])
    with pytest.raises(UserError, match="unknown option kyes"):
        report.main([str(tmp_path), "kyes=hair_color"])


def test_smoothing_is_debiased():
    assert ema([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert ema([0.0, 2.0], 0.5)[1] == pytest.approx(1.0 / 0.75)  # (0.5*2) / (1 - 0.5**2)


def svg_series(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Legend label -> drawn points of each series (``<g id="series-N">``) in an SVG chart."""
    root = ElementTree.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    points = [[(float(u.get("x")), float(u.get("y"))) for u in g.iter(f"{ns}use")]
              for g in root.iter(f"{ns}g") if g.get("id", "").startswith("series-")]
    legend = next(g for g in root.iter(f"{ns}g") if g.get("id", "").startswith("legend"))
    labels = [t.text for t in legend.iter(f"{ns}text")]
    return dict(zip(labels, points, strict=True))


def test_curves_draw_one_line_per_experiment_against_epoch_in_svg(runs, tmp_path):
    single = fake_run(tmp_path, "attention=mha4,tau.projections=2x,a_long_swept_value", 0,
                      [0.7], {})
    out = figures.main(["curves", *map(str, runs), str(single), f"out={tmp_path / 'loss.svg'}"])
    series = svg_series(out)
    assert list(series) == ["onehot (mean ± sd of 2 seeds)", "raw",
                            "attention=mha4,tau.projections=2x,a_long_swept_value"]
    assert [len(points) for points in series.values()] == [4, 4, 1], "a marker on each point"
    assert 'id="series-0"' in out.read_text() and "<text" in out.read_text()
    png = figures.main(["curves", *map(str, runs), "key=eval/hair_color",
                        f"out={tmp_path / 'hair.png'}"])
    assert Image.open(png).format == "PNG"
    with pytest.raises(UserError, match="no 'train/loss' values at or after step 1000"):
        figures.main(["curves", str(runs[0]), "from_step=1000"])
    with pytest.raises(UserError, match="no 'eval/missing'"):
        figures.main(["curves", str(runs[0]), "key=eval/missing"])
    with pytest.raises(UserError, match="out="):
        figures.main(["curves", str(runs[0]), "out=loss.jpg"])


def test_loss_against_faithfulness_has_a_point_per_evaluated_epoch(runs, tmp_path):
    out = figures.main(["loss_quality", *map(str, runs), "key=eval/hair_color",
                        f"out={tmp_path / 'lq.svg'}"])
    series = svg_series(out)
    assert [len(p) for p in series.values()] == [1, 1]  # evaluated after epoch 2 only
    assert list(series) == ["onehot (mean ± sd over seeds)", "raw"]


def fake_evaluation(path: Path, scales: tuple[float, ...] = (0.0, 2.0)) -> Path:
    """An evaluation JSON of guidance ``scales`` (the shape the evaluate command writes)."""
    names = attributes.NAMES
    runs = [{"sampler": "ddim", "steps": 25, "guidance": w, "eta": 1.0, "seconds": 1.0,
             "metrics": {"faithfulness_mean": 0.3 + w / 10,
                         **{n: 0.2 + w / 10 for n in names}}} for w in scales]
    path.write_text(json.dumps({
        "n": 64, "runs": runs, "chance": {n: 0.1 for n in names},
        "classifier": {"accuracy": {n: 0.9 for n in names}}}))
    return path


def blank_bands(path: Path) -> list[int]:
    """Heights in px of the white bands between a picture's first and last drawn rows."""
    drawn = (np.asarray(Image.open(path).convert("L")) < 250).any(axis=1)  # (H,)
    rows = np.flatnonzero(drawn)
    gaps = np.diff(rows) - 1
    return [int(g) for g in gaps if g > 0]


def test_an_evaluation_draws_attribute_bars_and_faithfulness_against_guidance(tmp_path):
    evaluation = fake_evaluation(tmp_path / "eval.json")
    bars = figures.main(["attributes", str(evaluation), f"out={tmp_path / 'bars.svg'}"])
    text = bars.read_text()
    assert text.count('id="bar-') == 2 * 18 and "ceiling" in text and "chance" in text
    lines = svg_series(figures.main(["settings", str(evaluation),
                                     f"out={tmp_path / 'guidance.svg'}"]))
    assert list(lines) == ["ddim, steps 25"] and len(lines["ddim, steps 25"]) == 2
    with pytest.raises(UserError, match="not an evaluation JSON"):
        figures.main(["settings", str(tmp_path / "bars.svg")])


def test_the_attribute_chart_fits_a_page_however_many_settings(tmp_path):
    """18 attributes in one chart no taller than 7.5 in at 150 dpi, for one setting or six
    (it grew to 20 in), with no empty band (one sat above the legend)."""
    heights = []
    for scales in ((2.0,), (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)):
        png = figures.main(["attributes", str(fake_evaluation(tmp_path / "e.json", scales)),
                            f"out={tmp_path / f'bars{len(scales)}.png'}"])
        heights.append(Image.open(png).height)
        assert max(blank_bands(png)) < 30, blank_bands(png)
    assert max(heights) <= 7.5 * 150 and max(heights) - min(heights) < 0.1 * max(heights)


def test_charts_and_tables_start_without_importing_torch():
    # Reading PNGs and JSON needs no tensor library: torch costs 2 s a command (forward and
    # attributes import it when they run).
    code = ("import sys, cartoondiff.figures, cartoondiff.report; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
