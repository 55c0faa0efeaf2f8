"""``python -m cartoondiff.evaluate`` end to end, and ``quick_evaluate`` for the training loop."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from cartoondiff.config import build, build_diffusion, build_model
from cartoondiff.diffusion import Sampler
from cartoondiff.evaluate import judge as C
from cartoondiff.evaluate.__main__ import main, settings_grid
from cartoondiff.evaluate.evaluator import quick_evaluate
from cartoondiff.runs.errors import UserError

QUICK_KEYS = ("eval/faithfulness_mean", "eval/faithfulness_relative", "eval/hair_color",
              "eval/face_color", "eval/frechet_classifier", "eval/diversity_within",
              "eval/diversity_across", "eval/diversity_real", "eval/coverage")


def strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_command_sweeps_guidance_and_writes_valid_json(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    main([f"checkpoint={tiny_checkpoint}", "n=8", "guidance=0,2", "sampler=ddim", "steps=2",
          "classifier_epochs=1", f"cache_dir={tmp_path / 'cache'}", "diversity_groups=2",
          "diversity_per_group=2", "device=cpu", f"out={out}"])
    result = strict_json(out.read_text())
    assert [(r["sampler"], r["steps"], r["guidance"]) for r in result["runs"]] == [
        ("ddim", 2, 0.0), ("ddim", 2, 2.0)]
    assert result["n"] == 5  # the 48-image tiny set holds out 5 for the classifier
    for run in result["runs"]:
        m = run["metrics"]
        assert all(0.0 <= m[name] <= 1.0 for name in C.NAMES)
        assert m["faithfulness_mean"] == pytest.approx(sum(m[n] for n in C.NAMES) / 18)
        assert m["frechet_classifier"] >= 0 and m["diversity_within"] >= 0
        # relative: only attributes the (1-epoch) classifier reads better than chance
        assert set(run["relative"]) == set(result["readable"]) <= set(C.NAMES)
        m.pop("faithfulness_relative")  # null when no attribute is readable
        assert all(math.isfinite(v) for v in m.values())
    assert set(result["classifier"]["accuracy"]) == set(C.NAMES)
    assert result["chance"]["hair"] == pytest.approx(1 / 111)
    assert (tmp_path / "cache" / "classifiers").is_dir()
    table = capsys.readouterr().out
    lines = table.splitlines()
    header = next(ln for ln in lines if ln.startswith("metric"))
    assert "ddim2 w0" in header and "ddim2 w2" in header and "ceiling" in header
    first_rows = [ln.split()[0] for ln in lines[lines.index(header) + 2:][:5]]
    assert first_rows == ["hair_color", "face_color", "eye_color", "glasses", "hair"]


def test_options_not_given_are_the_runs_own_sampler():
    own = Sampler("ddim", 25, 1.0, 1.0)
    grid = settings_grid({"sampler": None, "steps": None, "eta": None, "guidance": "0,2"}, own)
    assert grid == [Sampler("ddim", 25, 1.0, 0.0), Sampler("ddim", 25, 1.0, 2.0)]


def test_sweep_grid_runs_ddpm_once_per_guidance():
    opts = {"sampler": "ddpm,dpmpp2m", "steps": "5,10", "guidance": [0, 1], "eta": 0.0}
    grid = settings_grid(opts, Sampler())
    assert [(g.method, g.steps, g.guidance) for g in grid] == [
        ("ddpm", None, 0.0), ("ddpm", None, 1.0),
        ("dpmpp2m", 5, 0.0), ("dpmpp2m", 5, 1.0), ("dpmpp2m", 10, 0.0), ("dpmpp2m", 10, 1.0)]


@pytest.mark.parametrize("args, message", [
    (["colour=1"], "unknown option colour"),
    (["sampler=euler"], "sampler='euler' is invalid: expected one of"),
    (["steps=0"], "steps=0 is invalid"),
    (["steps=41"], "steps=41 is invalid: expected at most the diffusion's T=40"),
    (["guidance=x"], "guidance='x' is invalid"),
    (["guidance=nan"], "guidance=nan is invalid"),  # would write meaningless metrics
    (["seed=99999999999999999999"], "seed=99999999999999999999 is invalid"),
    (["n=two"], "n='two' is invalid"),
    (["out=result"], "out='result' is invalid: expected a path ending in .json"),
    ([], "checkpoint=None is invalid"),
])
def test_bad_options_are_refused(tiny_checkpoint, tmp_path, args, message):
    ckpt = [] if not args else [f"checkpoint={tiny_checkpoint}"]
    with pytest.raises(UserError, match=re.escape(message)):
        out = [] if any(a.startswith("out=") for a in args) else [f"out={tmp_path / 'x.json'}"]
        main([*ckpt, *out, *args])
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("attention", ["mha4", "none"])
def test_quick_evaluate_for_the_training_loop(make_cfg, tmp_path, attention):
    cfg = make_cfg(f"attention={attention}")
    model = build_model(cfg)  # untrained is fine: this checks the plumbing
    model.train()
    diffusion = build_diffusion(cfg)
    data = build(cfg, "data").setup()
    clf = C.load_or_train_classifier(data, tmp_path, epochs=1, progress=False)
    sample_fn = build(cfg, "sampler")
    rng = torch.get_rng_state()
    out = quick_evaluate(model, diffusion, sample_fn, data, clf, n=8, seed=0, device="cpu")
    assert set(QUICK_KEYS) <= set(out)
    assert all(isinstance(v, float) for v in out.values())
    assert all(math.isfinite(v) for k, v in out.items() if k != "eval/faithfulness_relative")
    assert model.training  # restored
    assert torch.equal(torch.get_rng_state(), rng)  # training's RNG stream untouched
    again = quick_evaluate(model, diffusion, sample_fn, data, clf, n=8, seed=0, device="cpu")
    assert again.keys() == out.keys()
    assert all(again[k] == out[k] or (math.isnan(again[k]) and math.isnan(out[k])) for k in out)
    # same seed, same weights: same numbers, so epochs compare


def test_an_evaluation_writes_beside_its_checkpoint_and_never_replaces_one(
        tiny_checkpoint, tmp_path, cache_dir, monkeypatch):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    shutil.copy(tiny_checkpoint, run / "model_ema.pt")
    monkeypatch.chdir(elsewhere)
    argv = [f"checkpoint={run / 'model_ema.pt'}", "n=4", "steps=3", "classifier_epochs=1",
            "diversity_groups=2", "diversity_per_group=2", f"cache_dir={cache_dir}",
            "wandb=disabled"]
    main(argv)
    assert (run / "eval.json").is_file() and not list(elsewhere.iterdir())
    before = (run / "eval.json").read_bytes()
    with pytest.raises(UserError, match=r"out='.*eval\.json' is invalid: .*an earlier "
                                        r"evaluation is there"):
        main(argv)
    assert (run / "eval.json").read_bytes() == before
    main([*argv, f"out={run / 'eval-again.json'}"])  # out= names another file
    assert (run / "eval-again.json").is_file()


def _with_judge_settings(tiny_checkpoint, folder, settings: dict):
    """A copy of the tiny model whose stored config trains its judge with ``settings``."""
    from cartoondiff.inference import checkpoint as ckpt

    state = ckpt.load(tiny_checkpoint)
    state["config"]["evaluate"]["classifier"] = settings
    folder.mkdir()
    ckpt.save_atomic(state, folder / "model_ema.pt")
    return folder / "model_ema.pt"


def test_the_evaluation_uses_the_judge_its_run_trained(tiny_checkpoint, tmp_path):
    """The run's evaluate.classifier settings choose the judge (the cache file its training
    used), so the command's numbers are the run's; classifier_epochs= overrides the epochs."""
    checkpoint = _with_judge_settings(tiny_checkpoint, tmp_path / "run",
                                      {"epochs": 1, "stem": 0, "precision": "fp32"})
    common = [f"checkpoint={checkpoint}", "n=4", "steps=2", "diversity_groups=2",
              "diversity_per_group=2", "device=cpu", "wandb=disabled",
              f"cache_dir={tmp_path / 'cache'}"]
    result = main([*common, f"out={tmp_path / 'a.json'}"])
    assert {k: result["classifier"]["settings"][k] for k in ("epochs", "stem", "precision")} \
        == {"epochs": 1, "stem": 0, "precision": "fp32"}
    result = main([*common, "classifier_epochs=2", f"out={tmp_path / 'b.json'}"])
    assert result["classifier"]["settings"]["epochs"] == 2


@pytest.mark.parametrize("settings", [{"epochs": "16"}, {"stem": 1.5}, {"unknown": 1},
                                      {"precision": 16}])
def test_unusable_judge_settings_in_a_checkpoint_are_one_line(tiny_checkpoint, tmp_path,
                                                               settings):
    checkpoint = _with_judge_settings(tiny_checkpoint, tmp_path / "run", settings)
    with pytest.raises(UserError, match=r"evaluate.classifier has unusable settings"):
        main([f"checkpoint={checkpoint}", "n=4", "steps=2", "device=cpu", "wandb=disabled",
              f"cache_dir={tmp_path / 'cache'}"])
