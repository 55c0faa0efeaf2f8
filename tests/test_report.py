"""Run comparison tables and loss-curve figures, from hand-written run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cartoondiff import figures, report
from cartoondiff.errors import UserError
from cartoondiff.plots import ema


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


def test_curves_average_seeds_into_one_line_per_experiment(runs, tmp_path):
    out = figures.main(["curves", *map(str, runs), f"out={tmp_path / 'loss.png'}"])
    image = Image.open(out).convert("RGB")
    colours = {c for _, c in image.getcolors(1 << 20)}
    two_lines = {(0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00)}
    assert two_lines <= colours, "one colour per experiment"
    assert (0x00, 0x9E, 0x73) not in colours, "seeds of one experiment are a single line"
    with pytest.raises(UserError, match="no 'train/loss' values at or after step 1000"):
        figures.main(["curves", str(runs[0]), "from_step=1000"])
    with pytest.raises(UserError, match="no 'eval/missing'"):
        figures.main(["curves", str(runs[0]), "key=eval/missing"])
