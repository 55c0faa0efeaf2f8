"""The package installs and explains itself.

Every ``python -m cartoondiff.*`` command answers ``--help`` (usage, every option, an example,
exit 0) and keeps the one-line error and exit 2 for an unknown option. A wheel built from this
checkout, installed (not editable, without its dependencies: they come from this environment)
into a scratch virtual environment, runs each console script with ``--help`` and a smoke run
from a folder outside the repository, keeping its cache in the user cache folder and writing
nothing into the current folder but the run's ``outputs/``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import runpy
import shutil
import site
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPTS = ("train", "sample", "evaluate", "figures", "report")


def command_modules() -> list[str]:
    """Every module of the package that runs as ``python -m``."""
    found = []
    for path in sorted((REPO / "cartoondiff").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name == "__main__.py" or re.search(r"^if __name__ == .__main__.:", text, re.M):
            parts = path.relative_to(REPO).with_suffix("").parts
            found.append(".".join(parts[:-1] if path.name == "__main__.py" else parts))
    return found


def run_module(module: str, *argv: str) -> tuple[int, str, str]:
    """``python -m module argv...`` in this process: (exit status, stdout, stderr)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [module, *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules"
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
        # the training app's --help leaves Hydra initialized, and its run config set: a later
        # test in this process would read that run's overrides (run_folder.resume_command)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    return code, out.getvalue(), err.getvalue()


def test_the_commands_are_found():
    modules = command_modules()
    assert {"cartoondiff.sample", "cartoondiff.evaluate", "cartoondiff.figures",
            "cartoondiff.report", "cartoondiff.run", "cartoondiff.data.synthesize",
            "cartoondiff.data.download", "cartoondiff.train.memory"} <= set(modules), modules


@pytest.mark.parametrize("module", command_modules())
def test_every_command_answers_help(module):
    code, out, err = run_module(module, "--help")
    assert code == 0, err
    if module == "cartoondiff.run":  # Hydra's help: the config groups and the config
        assert "== Configuration groups ==" in out and "debug: smoke" in out
        return
    assert out.startswith("usage: python -m " + module), out[:200]
    assert "-h, --help" in out and "\nexample:\n  python -m " + module in out
    lines = out.split("options (key=value", 1)[1].split("\nexample:", 1)[0].splitlines()[1:]
    rows = [i for i, line in enumerate(lines) if re.match(r"  [\w.]+=", line)]
    assert rows, lines
    for i in rows:  # every option shown as key=DEFAULT with its meaning (beside it or below)
        assert len(lines[i].split()) > 1 or lines[i + 1].startswith("    "), lines[i]


@pytest.mark.parametrize("module", [m for m in command_modules() if m != "cartoondiff.run"])
def test_an_unknown_option_is_one_line_and_exit_2(module):
    code, out, err = run_module(module, "--no_such_option=1")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_figures_subcommands_answer_help():
    for command in ("grid", "compare", "forward", "curves", "blog"):
        code, out, _ = run_module("cartoondiff.figures", command, "--help")
        assert code == 0 and out.startswith(f"usage: python -m cartoondiff.figures {command}")
        assert "out=null" in out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch virtual environment holding the wheel of this checkout; its other
    packages are this environment's (a .pth file names our site-packages)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"  # a copy: building writes build/ and *.egg-info beside setup.py
    for name in ("cartoondiff", "conf", "experiments"):
        shutil.copytree(REPO / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("cartoondiff-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    ours = [p for p in [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
            if Path(p).is_dir()]
    (Path(purelib) / "outer_environment.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    return venv


def _env(venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CARTOONDIFF_CACHE", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "XDG_CACHE_HOME": str(home / "xdg-cache"), "HOME": str(home),
            "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def test_the_wheel_runs_its_commands_from_any_folder(installed, tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    env = _env(installed, home)

    # (torchvision's import pulls in torch._dynamo: the commands start seconds faster without)
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import sys, cartoondiff.runs.cli as c, cartoondiff.train, "
                            "cartoondiff.sample; "
                            "print(c.__file__, c.conf_dir(), 'torchvision' in sys.modules)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True)
    module, conf, torchvision = where.stdout.split()
    assert module.startswith(str(installed)) and conf.startswith(str(installed)), where.stdout
    assert torchvision == "False"
    assert (Path(conf) / "debug" / "smoke.yaml").is_file()
    assert (Path(conf) / "experiment" / "fig15_16_final.yaml").is_file()

    helps = {name: subprocess.Popen([str(installed / "bin" / f"cartoondiff-{name}"), "--help"],
                                    cwd=elsewhere, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name in SCRIPTS}
    for name, process in helps.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, err[-2000:])
        assert f"usage: cartoondiff-{name}" in out, (name, out[:300])  # the command typed
        assert name != "train" or "== Configuration groups ==" in out, out[:300]

    train = subprocess.run([str(installed / "bin" / "cartoondiff-train"), "debug=smoke",
                            "experiment=fig13_14_mha4", "data=synthetic"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert [p.name for p in elsewhere.iterdir()] == ["outputs"]  # no .cache, wandb, ...
    runs = list(elsewhere.glob("outputs/*/*/model_ema.pt"))
    assert len(runs) == 1, train.stdout[-2000:]
    caches = list((home / "xdg-cache" / "cartoondiff").glob("synthetic-16px-*/meta.json"))
    assert len(caches) == 1, sorted(map(str, home.rglob("*")))[:20]


def test_the_cache_is_the_users_unless_told(monkeypatch, tmp_path):
    from cartoondiff.data.cache import default_cache_dir, resolve_cache_dir

    monkeypatch.delenv("CARTOONDIFF_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cartoondiff"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG rule: absolute only
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cartoondiff"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "cartoondiff"
    monkeypatch.setenv("CARTOONDIFF_CACHE", str(tmp_path / "mine"))
    assert resolve_cache_dir(None) == tmp_path / "mine"
    assert resolve_cache_dir(tmp_path / "given") == tmp_path / "given"  # data.cache_dir wins


def test_progress_off_a_terminal_is_a_line_every_10_percent(capsys):
    from cartoondiff.runs.progress import progress_bar

    assert not sys.stderr.isatty()  # pytest captures it
    for _ in progress_bar(range(1000), desc="rendering avatars"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 12 and "\r" not in "".join(lines)
    assert lines[-1].startswith("rendering avatars: 100%")


def _imported_parts() -> dict[str, set[str]]:
    """Each part of the package (a subpackage or a top-level module) -> the other parts it
    imports, at module level or inside a function."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "cartoondiff").rglob("*.py")):
        parts = path.relative_to(REPO / "cartoondiff").with_suffix("").parts
        if parts == ("__init__",):
            continue
        me = parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            graph.setdefault(me, set()).update(
                name.split(".")[1] for name in names
                if name.startswith("cartoondiff.") and name.split(".")[1] != me)
    return graph


def test_no_two_parts_of_the_package_import_each_other():
    graph = _imported_parts()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {part: reachable(part) for part in graph}
    loops = sorted({tuple(sorted((a, b))) for a in graph for b in reach[a]
                    if b in graph and a in reach[b] and a != b})
    assert graph["runs"] == set(), graph["runs"]  # the run plumbing imports no science
    assert not loops, loops
