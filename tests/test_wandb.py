"""W&B as the dashboard shows it: sweeps as one group, run names, eval metrics, resume.

Offline runs are read back with ``wandb leet inspect`` (records with ``--json``, the final
state with ``--summary --json``), the way a user checks them without a network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs import folder as run_folder
from cartoondiff.runs import naming as run_naming
from cartoondiff.runs.naming import labels_for, short_value, sweep_subdir
from cartoondiff.train import train
from tests.conftest import REPO, TINY

WANDB = Path(sys.executable).parent / "wandb"


def leet_records(path: Path) -> list[dict]:
    out = subprocess.run([WANDB, "leet", "inspect", "--json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def leet_summary(path: Path) -> dict:
    out = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def history(records: list[dict]) -> dict[int, dict]:
    """Step -> the W&B history row logged at that step."""
    return {int(r["history"]["item"]["_step"]): r["history"]["item"]
            for r in records if r["type"] == "history"}


def only_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def wandb_data(tmp_path, monkeypatch):
    """Artifacts W&B stages for upload go to a temporary folder, not the home directory."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


# --- names, groups and folders, from overrides alone ---------------------------------------

SWEEP = ["attention=single,mha4", "tau.projections=1x,2x", "model=tiny", "data.image_size=16",
         "logger.mode=offline"]


def test_a_sweep_job_is_named_by_its_swept_keys_only():
    job = ["attention=mha4", "tau.projections=2x", "model=tiny", "data.image_size=16",
           "logger.mode=offline"]
    labels = labels_for(job_overrides=job, sweep_overrides=SWEEP, multirun=True,
                        sweep_dir="multirun/2026-11-30/12-00-00",
                        choices={"attention": "mha4", "scale": None, "experiment": None,
                                 "hydra/launcher": "basic"})
    assert labels.name == "attention=mha4,tau.projections=2x"
    assert labels.group == "sweep-2026-11-30_12-00-00"
    assert labels.tags == ["attention=mha4", "tau.projections=2x"]
    assert labels.job_type == "train"
    assert labels.config["sweep"] == {"attention": "mha4", "tau.projections": "2x"}
    assert labels.config["choices"] == {"attention": "mha4", "scale": None, "experiment": None}


@pytest.mark.parametrize("swept", ["seed=range(0,3)", "seed=choice(0,1,2)", "seed=0,1,2"])
def test_every_kind_of_hydra_sweep_counts_as_swept(swept):
    labels = labels_for(job_overrides=["seed=1", "model=tiny"], multirun=True,
                        sweep_overrides=[swept, "model=tiny"], sweep_dir="m/d/t")
    assert labels.name == "seed=1"


def test_an_experiment_keeps_its_group_with_the_scale():
    cpu = labels_for(group="fig12_tau2x", tags=["fig12"],
                     job_overrides=["experiment=fig12_tau2x", "scale=cpu"],
                     choices={"experiment": "fig12_tau2x", "scale": "cpu"})
    gpu = labels_for(group="fig12_tau2x", job_overrides=["experiment=fig12_tau2x"],
                     choices={"experiment": "fig12_tau2x", "scale": "gpu"})
    blog = labels_for(group="fig12_tau2x", job_overrides=["experiment=fig12_tau2x"],
                      choices={"experiment": "fig12_tau2x", "scale": None})
    assert (cpu.group, gpu.group, blog.group) == ("fig12_tau2x-cpu", "fig12_tau2x-gpu",
                                                  "fig12_tau2x-blog")
    assert (cpu.job_type, gpu.job_type, blog.job_type) == ("train", "train", "train")
    assert cpu.tags == ["fig12", "scale=cpu"]
    assert cpu.name == "fig12_tau2x", "nothing but the experiment: named after it"
    # A sweep inside an experiment stays in the experiment's group.
    seeds = labels_for(group="fig12_tau2x", multirun=True, sweep_dir="m/d/t",
                       job_overrides=["experiment=fig12_tau2x", "scale=cpu", "seed=1"],
                       sweep_overrides=["experiment=fig12_tau2x", "scale=cpu", "seed=0,1"],
                       choices={"experiment": "fig12_tau2x", "scale": "cpu"})
    assert (seeds.group, seeds.name) == ("fig12_tau2x-cpu", "seed=1")


def test_the_users_own_name_and_group_win():
    labels = labels_for(name="mine", group="ablation", multirun=True, sweep_dir="m/d/t",
                        job_overrides=["attention=mha4", "logger.group=ablation"],
                        sweep_overrides=["attention=single,mha4", "logger.group=ablation"],
                        choices={"experiment": "fig12_tau2x", "scale": "cpu"})
    assert (labels.name, labels.group) == ("mine", "ablation")


def test_a_single_run_is_named_by_its_overrides_without_plumbing():
    labels = labels_for(job_overrides=["data=cartoonset", "data.root=/data/sets/cartoonset10k",
                                       "trainer.device=cpu", "logger.mode=offline",
                                       "resume=auto", "optim.optimizer.lr=0.001"])
    name, stamp = labels.name.split("@")
    assert name == "data=cartoonset,data.root=cartoonset10k,optim.optimizer.lr=0.001"
    assert run_naming.strip_stamp(labels.name) == name and run_naming.STAMP.search(labels.name)
    assert labels.group is None and labels.config == {"choices": {}}
    assert labels.job_type == "train"
    plain = labels_for().name
    assert plain.startswith("run@") and run_naming.strip_stamp(plain) == ""


def test_values_in_names_lose_paths_and_length():
    assert short_value("/some/long/path/") == "path"
    assert short_value("C:\\data\\cs10k") == "cs10k"
    assert short_value("[1,2,4]") == "[1,2,4]"
    assert short_value("it's a 'quoted' value") == "it_s_a__quoted__value"
    long = short_value("x" * 200)
    assert len(long) <= run_naming.MAX_VALUE and long != short_value("x" * 199)


def test_sweep_folders_stay_short_and_flat_with_paths_and_30_overrides(tmp_path):
    fixed = [f"trainer.sample_seed={i}" for i in range(27)]  # stand-ins for a long command line
    sweep = ["data.root=/some/very/long/path/to/a/copy/of/cartoonset100k",
             "attention=single,mha4", "optim.optimizer.lr=0.001,0.0001", *fixed]
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n" + "".join(f"    - {o}\n" for o in sweep))
    job = ["data.root=/some/very/long/path/to/a/copy/of/cartoonset100k", "attention=mha4",
           "optim.optimizer.lr=0.0001", *fixed]
    assert sweep_subdir(3, job, str(tmp_path)) == "3_attention=mha4,optim.optimizer.lr=0.0001"
    # Sweeping the paths themselves: their last parts only, never a slash.
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - data.root=/a/b/cs10k,/a/b/cs100k\n")
    assert sweep_subdir(1, ["data.root=/a/b/cs100k"], str(tmp_path)) == "1_data.root=cs100k"
    # Many swept keys: cut to a name a file system takes, a hash keeping them distinct.
    many = [f"model.unet.k{i}=value_number_{i}" for i in range(30)]
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n" + "".join(f"    - {o},x\n" for o in many))
    name = sweep_subdir(0, many, str(tmp_path))
    assert len(name) <= run_naming.MAX_NAME + 2 and "/" not in name
    # A sweep of one job (python run.py -m attention=mha4 tau.projections=2x): its overrides.
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - attention=mha4\n    - tau.projections=2x\n"
        "    - trainer.device=cpu\n")
    one = ["attention=mha4", "tau.projections=2x", "trainer.device=cpu"]
    assert sweep_subdir(0, one, str(tmp_path)) == "0_attention=mha4,tau.projections=2x"
    assert sweep_subdir(0, [], str(tmp_path)) == "0_run"


def test_run_labels_read_the_experiment_and_scale_from_hydra(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=fig12_tau2x", "scale=cpu"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        labels = run_naming.run_labels(cfg.logger)
    finally:
        HydraConfig.instance().cfg = None
    assert labels.group == "fig12_tau2x-cpu" and labels.job_type == "train"
    assert "scale=cpu" in labels.tags and labels.config["choices"]["scale"] == "cpu"


# --- what reaches W&B ---------------------------------------------------------------------

def test_the_users_sweep_is_one_group_of_four_short_named_runs(tmp_path, cache_dir):
    """python run.py -m attention=single,mha4 tau.projections=1x,2x debug=smoke: W&B offline."""
    sweep = tmp_path / "multirun" / "2026-11-30" / "12-00-00"
    cmd = [sys.executable, "run.py", "-m", "attention=single,mha4", "tau.projections=1x,2x",
           "debug=smoke", "data.n=16", "evaluate.every_epochs=1",  # smoke logs W&B offline
           "evaluate.n=4", "evaluate.classifier.epochs=1", f"data.cache_dir={cache_dir}",
           f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == [
        "0_attention=single,tau.projections=1x", "1_attention=single,tau.projections=2x",
        "2_attention=mha4,tau.projections=1x", "3_attention=mha4,tau.projections=2x"]
    names, groups = [], set()
    for job in jobs:
        records = leet_records(only_run(job))
        run = next(r["run"] for r in records if r["type"] == "run")
        names.append(run["display_name"])
        groups.add(run["run_group"])
        assert job.name.endswith(run["display_name"])
        config = leet_summary(only_run(job))["config"]
        attention, projections = run["display_name"].replace("=", ",").split(",")[1::2]
        assert config["sweep"] == {"attention": attention, "tau.projections": projections}
        assert config["choices"]["attention"] == attention
        assert config["tau"]["projections"] == projections and "tau" not in config["model"]
        assert config["recipe"] == "beyond_blog"  # the recipe is on the record
        assert run["tags"] == [f"attention={attention}", f"tau.projections={projections}"]
        # Evaluation ran after the first epoch: eval/* plot against epoch, best in summary.
        metrics = {r["metric"].get("name") or r["metric"]["glob_name"]: r["metric"]
                   for r in records if r["type"] == "metric"}
        assert metrics["eval/*"]["step_metric"] == "epoch"
        assert metrics["eval/faithfulness_mean"]["summary"] == {"max": True, "last": True}
        assert metrics["eval/frechet_classifier"]["summary"] == {"min": True, "last": True}
        evals = [row for row in history(records).values() if "eval/faithfulness_mean" in row]
        assert [row["epoch"] for row in evals] == [1]
        summary = leet_summary(only_run(job))["summary"]
        assert set(summary["eval/faithfulness_mean"]) == {"max", "last"}
    assert groups == {"sweep-2026-11-30_12-00-00"}
    assert len(set(names)) == 4


def test_a_multirun_with_a_data_path_and_30_overrides_runs(tmp_path, cache_dir):
    """Hydra's default folder names made nested folders of data.root and, with a long command
    line, stopped with "OSError: File name too long"."""
    from cartoondiff.data.synthesize import write_cartoonset

    root = tmp_path / ("very_long_folder_name_" * 6) / "cartoonset100k"
    write_cartoonset(root, n=8, seed=0)
    tiny = [t for t in TINY if not t.startswith("data.n=")]  # a synthetic-only key
    extra = [f"trainer.sample_seed={1000 + i}" for i in range(23)]  # makes 30 with the rest
    cmd = [sys.executable, "run.py", "-m", "seed=0,1", *tiny, "trainer.max_steps=1",
           "data=cartoonset", f"data.root={root}",
           f"data.cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]
    assert len(cmd) - 3 >= 30 and len(" ".join(cmd)) > 600
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0_seed=0", "1_seed=1"]
    assert all((tmp_path / "sweep" / j / "model_ema.pt").is_file() for j in jobs)


def test_resume_continues_one_wandb_run_with_every_step(make_cfg, tmp_path):
    """Offline W&B cannot append to a run; before, resuming left two offline-run folders with
    the same id (each half of the history, and `wandb sync` of both keeps one half)."""
    # 16 images / batch 8 = 2 steps an epoch: an evaluation in each half.
    common = ("logger.mode=offline", "trainer.checkpoint_every=2", "data.n=16",
              "evaluate.every_epochs=1", "evaluate.n=4", "evaluate.classifier.epochs=1")
    train(make_cfg(*common, "trainer.max_steps=2"), run_dir=tmp_path)
    first = only_run(tmp_path)
    run_id = (tmp_path / "wandb_id.txt").read_text()
    train(make_cfg(*common, "trainer.max_steps=4", "resume=auto"), run_dir=tmp_path)
    folder = only_run(tmp_path)
    assert folder != first and run_id in folder.name  # (-1 when both started in one second)
    records = leet_records(folder)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["display_name"].startswith("run@"), "a plain run's name"
    assert run["display_name"] in (tmp_path / "config.yaml").read_text(), "kept on resume"
    last = run_folder.list_checkpoints(tmp_path / "checkpoints")[-1]
    assert ckpt.load(last)["config"]["logger"]["name"] == run["display_name"]
    steps = history(records)
    assert [s for s, row in steps.items() if "train/loss" in row] == [1, 2, 3, 4]
    assert "forward_process" in json.dumps(steps[0]), "images before the resume are kept"
    evals = {row["epoch"]: row["eval/frechet_classifier"] for row in steps.values()
             if "eval/frechet_classifier" in row}
    assert sorted(evals) == [1, 2]
    summary = leet_summary(folder)
    assert summary["run_id"] == run_id and summary["step"] == 4
    assert summary["summary"]["step"] == 4
    assert summary["summary"]["eval/frechet_classifier"] == {"min": min(evals.values()),
                                                             "last": evals[2]}


def test_the_last_epoch_grid_and_the_final_grid_both_survive(make_cfg, tmp_path):
    # 48 images / batch 8 = 6 steps: the run ends exactly where epoch 0 ends.
    train(make_cfg("logger.mode=offline", "trainer.max_steps=6"), run_dir=tmp_path)
    row = history(leet_records(only_run(tmp_path)))[6]
    assert row["samples.caption"] == "epoch 0"
    assert row["samples_final.caption"] == "final"
    assert row["samples.path"] != row["samples_final.path"]


def test_no_model_artifact_unless_asked(make_cfg, tmp_path, wandb_data):
    """(With logger.log_model=true: test_plain_runs_have_their_own_names_and_...)"""
    train(make_cfg("logger.mode=offline"), run_dir=tmp_path)
    assert not [r for r in leet_records(only_run(tmp_path))
                if r["type"] == "artifact" and r["artifact"]["type"] == "model"]


def test_plain_runs_have_their_own_names_and_evaluations_are_runs_of_their_own(
        make_cfg, tmp_path, wandb_data):
    """Two plain runs: different names (never ``default``), job_type train. The first
    evaluates every epoch and exports ``model_best.pt``; ``python -m cartoondiff.evaluate`` on
    it logs a job_type=eval run in its group with a row per setting and the accuracies."""
    from cartoondiff.evaluate.__main__ import main as evaluate

    common = ("logger.mode=offline", "data.n=16", "evaluate.n=4",
              "evaluate.classifier.epochs=1")
    first, second = tmp_path / "first", tmp_path / "second"
    train(make_cfg(*common, "logger.group=ablation", "logger.log_model=true",
                   "evaluate.every_epochs=1", "trainer.max_steps=4"), run_dir=first)
    train(make_cfg(*common, "trainer.max_steps=1"), run_dir=second)
    runs = [next(r["run"] for r in leet_records(only_run(d)) if r["type"] == "run")
            for d in (first, second)]
    names = [run["display_name"] for run in runs]
    assert names[0] != names[1] and all(n.startswith("run@") for n in names), names
    assert [run["job_type"] for run in runs] == ["train", "train"]

    records = leet_records(only_run(first))
    steps = history(records)
    evals = [row for row in steps.values() if "eval/attr/glasses" in row]
    assert [row["epoch"] for row in evals] == [1, 2] and "eval/glasses" not in evals[0]
    assert "eval/faithfulness_mean" in evals[0], "the means stay at the top of eval/"
    tables = [k for row in steps.values() for k in row if k.endswith("_rows._type")]
    assert tables == ["samples_rows._type"], "the rows table once, not with every grid"
    assert steps[0]["forward_process.caption"].startswith("columns: t = [0, ")
    assert not any("parameters" in row for row in steps.values())
    summary = leet_summary(only_run(first))
    assert summary["config"]["parameters"] == summary["summary"]["parameters"] > 0
    assert set(summary["summary"]["eval/attr/glasses"]) == {"max", "last"}
    models = {a["manifest"]["contents"][0]["path"]: a for r in records
              if r["type"] == "artifact" and (a := r["artifact"])["type"] == "model"}
    assert set(models) == {"model_best.pt", "model_ema.pt"}
    run_id = (first / "wandb_id.txt").read_text()
    assert {m["name"] for m in models.values()} == {f"model-{run_id}"}, "versions of one"
    assert "best" in models["model_best.pt"]["aliases"]
    assert "latest" in models["model_ema.pt"]["aliases"]
    assert json.loads(models["model_ema.pt"]["metadata"])["step"] == 4

    out = tmp_path / "evaluation" / "eval.json"
    result = evaluate([f"checkpoint={first / 'model_ema.pt'}", "n=4", "guidance=0,2",
                       "classifier_epochs=1", f"out={out}", "diversity_groups=2",
                       "diversity_per_group=2"])
    folder = only_run(out.parent)
    run = next(r["run"] for r in leet_records(folder) if r["type"] == "run")
    assert (run["job_type"], run["run_group"]) == ("eval", "ablation")
    assert run["display_name"] == f"eval:{names[0]}"
    rows = [row for row in history(leet_records(folder)).values() if "setting" in row]
    faith = [r["runs"][i]["metrics"]["faithfulness_mean"] for r in [result] for i in (0, 1)]
    assert [row["eval/faithfulness_mean"] for row in rows] == pytest.approx(faith)
    assert [row["setting/guidance"] for row in rows] == [0, 2]
    assert all("eval/attr/hair_color" in row for row in rows)
    last = history(leet_records(folder))[1]  # the table and the plot, once
    assert last["settings.nrows"] == 2 and "faithfulness_vs_guidance_table._type" in last
    evaluation = leet_summary(folder)
    assert evaluation["config"]["checkpoint"] == str(first / "model_ema.pt")
    assert [s["guidance"] for s in evaluation["config"]["settings"]] == [0, 2]
    assert evaluation["summary"]["eval/faithfulness_mean"] == {"max": max(faith)}


def test_a_sweep_agent_drives_run_py_and_its_run_id_is_kept(tmp_path, cache_dir):
    """What `wandb agent` runs for sweeps/attention.yaml (its command: the interpreter,
    run.py and key=value arguments, WANDB_RUN_ID and WANDB_SWEEP_ID in the environment),
    offline; the agent's id is the run's, recorded for a resume, which continues it."""
    import os

    import yaml

    sweep = yaml.safe_load((REPO / "sweeps" / "attention.yaml").read_text(encoding="utf-8"))
    assert sweep["program"] == "run.py" and "${args_no_hyphens}" in sweep["command"]
    args = [f"{key}={values['values'][0]}" for key, values in sweep["parameters"].items()]
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_RUN_ID": "agent7run", "WANDB_SWEEP_ID": "sweep42"}
    base = [sys.executable, "run.py", *args, "debug=smoke", f"data.cache_dir={cache_dir}",
            f"hydra.run.dir={run}"]
    out = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "wandb_id.txt").read_text() == "agent7run"
    assert only_run(run).name.endswith("-agent7run")
    env["WANDB_RUN_ID"] = "another1"  # a later agent's id never replaces the run's own
    out = subprocess.run([*base, "resume=auto", "trainer.max_steps=3"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "wandb_id.txt").read_text() == "agent7run"
    assert {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")} == {
        "agent7run"}
