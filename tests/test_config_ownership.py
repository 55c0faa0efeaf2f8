"""Each config file owns the node it builds: the base files state the default run."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO, compose_cfg

# The group files of the default run; presets (recipe, scale, experiment) come after them.
OWNERS = ["data", "model", "tau", "attention", "noise_schedule", "sampler", "optim"]


def _leaves(node: object, prefix: str) -> set[str]:
    if isinstance(node, dict):
        return {k for key, v in node.items() if key != "defaults"
                for k in _leaves(v, f"{prefix}.{key}" if prefix else str(key))}
    return {prefix}


def _placed_leaves(path: Path, group: str | None) -> set[str]:
    """The keys a config file sets, at the package it is merged into."""
    text = path.read_text(encoding="utf-8")
    header = [line.split("@package", 1)[1].strip() for line in text.splitlines()
              if line.startswith("# @package")]
    package = header[0] if header else (group or "")
    return _leaves(yaml.safe_load(text) or {}, "" if package == "_global_" else package)


def test_no_value_of_the_default_run_is_set_twice():
    """The default composition: every key is written by one file only, so a reader of
    conf/config.yaml and the options it names knows what python run.py trains."""
    cfg = compose_cfg()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        choices = compose("config", return_hydra_config=True).hydra.runtime.choices
    assert [g for g in ("recipe", "scale", "experiment") if choices.get(g)] == []
    files = {"config": _placed_leaves(REPO / "conf" / "config.yaml", None)}
    for group in OWNERS:
        files[group] = _placed_leaves(REPO / "conf" / group / f"{choices[group]}.yaml", group)
    seen: dict[str, str] = {}
    for name, keys in files.items():
        for key in keys - {"hydra"} - {k for k in keys if k.startswith("hydra.")}:
            assert key not in seen, f"{key} is set by {seen[key]} and by {name}"
            seen[key] = name
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert [k for k in _leaves(resolved, "") if k.endswith(".projections")] == ["tau.projections"]
    assert [k for k in _leaves(resolved, "") if k.endswith(".T")] == ["noise_schedule.T"]
    # what the default states, as docs/results.md's default recipe
    assert (cfg.recipe, cfg.tau._target_, cfg.diffusion.prediction) == (
        "beyond_blog", "cartoondiff.models.PerAttributeTau", "v")
    assert cfg.model.unet.global_context and cfg.model.unet.scale_shift
    assert (cfg.sampler.eta, cfg.sampler.steps) == (1.0, 25)


def test_the_recipe_is_recorded_and_blog_still_changes_its_nodes():
    cfg = compose_cfg("recipe=blog", "attention=none")
    assert cfg.recipe == "blog" and cfg.tau.encoding == "onehot"
    assert cfg.diffusion.prediction == "eps" and cfg.sampler.eta == 0.0
    assert not cfg.model.unet.global_context and not cfg.model.unet.cross_attention
    assert compose_cfg("experiment=beyond_default").recipe == "beyond_blog"


def test_the_defaults_list_has_no_hidden_order(tmp_path):
    """The owning groups in reverse order compose the same config."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf, symlinks=False)
    text = (conf / "config.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines)
            if line.strip().startswith("- ") and line.strip()[2:].split(":")[0] in OWNERS]
    assert len(rows) == len(OWNERS)
    reordered = [lines[i] for i in rows][::-1]
    for i, line in zip(rows, reordered, strict=True):
        lines[i] = line
    (conf / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for overrides in ([], ["recipe=blog", "attention=none"], ["experiment=fig15_16_final",
                                                              "data=synthetic"]):
        with initialize_config_dir(str(conf), version_base="1.3"):
            shuffled = compose("config", overrides=overrides)
        assert shuffled == compose_cfg(*overrides), overrides



# Where each group's files may write: their own node, with two exceptions by design. The
# attention group says how the UNet reads Tau's tokens (under model.unet), and a model size
# sets Tau's widths. Presets (recipe, scale, experiment, debug) change several nodes at once.
WRITES = {
    "data": ("data",),
    "model": ("model", "tau.hidden_dim", "tau.context_dim", "tau.n_tokens"),
    "tau": ("tau",),
    "attention": ("model.unet.cross_attention", "model.unet.num_heads"),
    "noise_schedule": ("noise_schedule",),
    "sampler": ("sampler",),
    "optim": ("optim",),
}
PRESETS = ("recipe", "scale", "experiment", "debug", "hydra")


def test_every_group_file_writes_only_under_its_own_node():
    groups = {p.name for p in (REPO / "conf").iterdir() if p.is_dir()}
    assert groups == set(WRITES) | set(PRESETS), "a new group: say here what it may write"
    for group, allowed in WRITES.items():
        for path in sorted((REPO / "conf" / group).glob("*.yaml")):
            stray = [key for key in _placed_leaves(path, group)
                     if not any(key == a or key.startswith(a + ".") for a in allowed)]
            assert not stray, f"{path.relative_to(REPO)} writes {stray} outside {allowed}"


def test_the_vanilla_model_has_no_condition_anywhere():
    """attention=none sets only how the UNet reads tokens, yet no condition is left: no Tau,
    no global context, whatever the model size says about global context."""
    from cartoondiff.config import build_model

    for size in ("tiny", "small"):
        model = build_model(compose_cfg("attention=none", f"model={size}"))
        assert not model.conditional and model.tau is None
        assert model.unet.global_embed is None and model.unet.context_dim is None
    assert compose_cfg("attention=none").model.unet.global_context  # the size's own value
