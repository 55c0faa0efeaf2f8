"""Run comparison tables and loss-curve figures, from hand-written run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from PIL import Image

from cartoondiff import attributes, figures, report
from cartoondiff.figures.charts import ema
from cartoondiff.runs.errors import UserError
from tests.conftest import REPO


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
    assert lines[0] == "| experiment | seeds | final loss | hair_color ep2 |"
    # onehot: last-quarter losses 0.1 and 0.3 -> 0.2 ± 0.1414; hair 0.5, 0.7 -> 0.6 ± 0.141
    assert lines[2] == "| onehot | 0,1 | 0.2000 ± 0.1414 | 0.600 ± 0.141 |"
    assert lines[3] == "| raw | 0 | 0.4000 | 0.100 |"


def test_table_adds_the_final_evaluation_json(runs):
    for run, hair in zip(runs, (0.4, 0.6, 0.2), strict=True):
        (run / "eval.json").write_text(json.dumps({"runs": [{"metrics": {"hair_color": hair}}]}))
    table = report.main([str(r) for r in runs] + ["keys=hair_color", "final=eval.json"])
    assert table.splitlines()[0].endswith("| hair_color ep2 | hair_color final |")
    assert table.splitlines()[2].endswith("| 0.500 ± 0.141 |")
    (runs[2] / "eval.json").unlink()  # not evaluated yet
    assert report.main([str(r) for r in runs] + ["keys=hair_color", "final=eval.json"]
                       ).splitlines()[3].endswith("| 0.100 | - |")
    (runs[2] / "eval.json").write_text("{not json")
    with pytest.raises(UserError, match="raw_s0/eval.json: not an evaluation JSON"):
        report.main([str(r) for r in runs] + ["final=eval.json"])


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


def fake_evaluation(path: Path) -> Path:
    """An evaluation JSON of two guidance scales (the shape the evaluate command writes)."""
    names = attributes.NAMES
    runs = [{"sampler": "ddim", "steps": 25, "guidance": w, "eta": 1.0, "seconds": 1.0,
             "metrics": {"faithfulness_mean": 0.3 + w / 10,
                         **{n: 0.2 + w / 10 for n in names}}} for w in (0.0, 2.0)]
    path.write_text(json.dumps({
        "n": 64, "runs": runs, "chance": {n: 0.1 for n in names},
        "classifier": {"accuracy": {n: 0.9 for n in names}}}))
    return path


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


def test_charts_and_tables_start_without_importing_torch():
    # Reading PNGs and JSON needs no tensor library: torch costs 2 s a command (forward and
    # attributes import it when they run).
    code = ("import sys, cartoondiff.figures, cartoondiff.report; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
