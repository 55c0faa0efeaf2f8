"""The README and the docs pages it hands over to are the contract: every command in them
runs, as written, at tiny scale.

Commands are collected from the ```bash blocks and the inline `python ...` spans of the README
and of the docs pages in ``DOC_PAGES`` (an inline ``python -m NAME`` with no arguments names a
command in prose and is not run), and from the command lines in the comments of
experiments/*.yaml. Each is run in a subprocess from the repository root after the same
substitutions a careful reader would make on a small machine: placeholders (``DIR``,
``outputs/DATE/TIME``, ``multirun/DATE/TIME/*``, ``RUN_A``, ``...``) become prepared folders,
outputs go to a temporary folder, and training commands get the tiny settings of the other
tests appended (command-line overrides given last win). A command this runner does not know
fails the test, so a command moved from the README to a docs page cannot go unchecked, and a
docs page is either collected or says why not (``NOT_COLLECTED``).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_tiny, real_sample_dir

README = REPO / "README.md"
# The docs pages that took over the README's topics: their commands run as the README's do.
DOC_PAGES = ("docs/configuration.md", "docs/data.md", "docs/commands.md", "docs/figures.md",
             "docs/wandb.md", "docs/beyond-one-machine.md")
# Pages whose commands this test does not run, and why.
NOT_COLLECTED = {
    "docs/results.md": "the commands that made its numbers: full trainings and evaluations",
    "docs/benchmarks.md": "benchmarks of minutes each and the GPU session's commands",
    "docs/evaluation.md": "full-size evaluations and judge recipes; the evaluation commands "
                          "run from docs/commands.md",
    "docs/reliability.md": "it names tests, which the suite runs",
}
# the smoke preset (conf/debug/smoke.yaml), at the prepared runs' T
TINY_RUN = ["debug=smoke", "noise_schedule.T=60", "logger.mode=disabled"]  # W&B: test_wandb
# Commands that cannot run here, and where they are checked instead.
NOT_HERE = {
    "python3 -m venv .venv && . .venv/bin/activate": "makes the virtualenv the tests run in",
    "pip install -r requirements.txt": "installs into this environment; tests/test_package.py "
                                       "installs the project into a scratch one",
    "python -m pytest -q": "the test suite itself",
    "wandb leet outputs/DATE/TIME/wandb": "an interactive terminal UI (its inspect form runs)",
    "wandb sync outputs/DATE/TIME/wandb/offline-run-*": "needs a W&B account and a network",
    "wandb sync multirun/DATE/TIME/*/wandb/offline-run-*": "needs a W&B account and a network",
    "wandb sweep --project cartoondiff sweeps/attention.yaml": (
        "needs a W&B account and a network; what the agent then runs is run by "
        "tests/test_wandb.py::test_a_sweep_agent_drives_run_py_and_its_run_id_is_kept"),
    "wandb agent ENTITY/cartoondiff/SWEEP_ID": (
        "needs a W&B account and a network; tests/test_wandb.py::"
        "test_a_sweep_agent_drives_run_py_and_its_run_id_is_kept drives run.py as the agent "
        "does, offline"),
    "bash bench/gpu_session.sh OUT": "run at tiny scale by tests/test_gpu_session.py",
    "pip install .": "installs into this environment; tests/test_package.py installs the wheel "
                     "into a scratch one and runs its commands from another folder",
}
# Installed command names run here as the checkout's forms (test_package.py runs the real ones).
INSTALLED = {"cartoondiff-train": "python run.py",
             **{f"cartoondiff-{c}": f"python -m cartoondiff.{c}"
                for c in ("sample", "evaluate", "figures", "report")}}


def _code_spans(text: str) -> list[str]:
    """Commands in ```bash blocks (continuations joined, comments dropped) and in inline
    `python ...`/`bash ...` spans outside them."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if re.fullmatch(r"python -m [\w.]+", span):  # a command named in prose, not run
            continue
        if span.startswith(("python ", "bash ", "torchrun ", "wandb ")) and "..." not in span[:9]:
            commands.append(span)
    return list(dict.fromkeys(commands))


def page_commands(page: str) -> list[str]:
    """A page's commands, installed names in their checkout form."""
    commands = []
    for command in _code_spans((REPO / page).read_text(encoding="utf-8")):
        name, _, rest = command.partition(" ")
        commands.append(f"{INSTALLED[name]} {rest}".strip() if name in INSTALLED else command)
    return list(dict.fromkeys(commands))


def readme_commands() -> list[str]:
    """The README's commands (each runs once)."""
    return page_commands("README.md")


def docs_commands() -> dict[str, str]:
    """The commands of the README and of DOC_PAGES, each once, with the page it is first on."""
    found: dict[str, str] = {}
    for page in ("README.md", *DOC_PAGES):
        for command in page_commands(page):
            found.setdefault(command, page)
    return found


def experiment_commands() -> list[str]:
    """``#   python ...`` lines in the comments of experiments/*.yaml."""
    found = []
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"#\s+(python .*?)(\s{2,}#.*)?$", line)
            if match:
                found.append(" ".join(match.group(1).split()))
    return list(dict.fromkeys(found))


def same_command(command: str) -> str:
    """A command up to the name of the file it writes: ``out=a.png`` and ``out=b.png`` (or no
    ``out``) run the same code, so one of them is run."""
    return re.sub(r" out=\S+", "", command)


def experiment_commands_to_run() -> list[str]:
    """The experiments' commands the README and docs test does not already run (each once)."""
    done = {same_command(c) for c in docs_commands()}
    keep: dict[str, str] = {}
    for command in experiment_commands():
        if same_command(command) not in done:
            keep.setdefault(same_command(command), command)
    return list(keep.values())


class Workspace:
    """Folders the commands' placeholders stand for, made once per test module."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        from cartoondiff.data.synthesize import write_cartoonset
        from cartoondiff.evaluate.__main__ import main as evaluate
        from cartoondiff.train import train

        self.root, self.cache_dir = root, cache_dir
        self.labeled = root / "cartoonset"  # DIR: Cartoon Set's format, with CSVs
        write_cartoonset(self.labeled, n=16, seed=0)
        # data.root=DIR of the vanilla commands: PNGs without CSVs, the real Cartoon Set sample
        # where there is one (CI), else built-in avatars with their CSVs left out
        self.unlabeled = real_sample_dir() or root / "pngs"
        if self.unlabeled == root / "pngs":
            write_cartoonset(self.unlabeled, n=16, seed=1)
            for csv in self.unlabeled.glob("*.csv"):
                csv.unlink()
        # outputs/DATE/TIME and RUN_A: an experiment run with epoch grids 0..9, evaluations
        # after epochs 5 and 10, offline W&B; RUN_A/eval.json: an evaluation of two settings
        self.run_a, self.run_b = root / "run_a", root / "run_b"
        for run, seed in ((self.run_a, 0), (self.run_b, 1)):
            train(compose_tiny(cache_dir, "experiment=fig15_16_final", "scale=cpu",
                               "model=tiny", "data.image_size=16", "data.n=16",
                               "noise_schedule.T=60", f"seed={seed}", "trainer.max_steps=20",
                               "logger.mode=offline", "trainer.checkpoint_every=10",
                               "evaluate.every_epochs=5", "evaluate.n=4",
                               "evaluate.classifier.epochs=1"),
                  run_dir=run)
        evaluate([f"checkpoint={self.run_a / 'model_ema.pt'}", "n=4", "guidance=0,2",
                  "classifier_epochs=1", "diversity_groups=2", "diversity_per_group=2",
                  f"cache_dir={cache_dir}", "wandb=disabled", f"out={self.run_a / 'eval.json'}"])
        # multirun/DATE/TIME: a sweep's folder, its two jobs and its record as Hydra leaves it
        self.sweep = root / "multirun" / "2026-01-01" / "00-00-00"
        for i, run in enumerate((self.run_a, self.run_b)):
            shutil.copytree(run, self.sweep / f"{i}_seed={i}",
                            ignore=shutil.ignore_patterns(".lock"))
        (self.sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")

    def env(self) -> dict[str, str]:
        return {**os.environ, "CARTOONDIFF_CACHE": str(self.cache_dir), "OMP_NUM_THREADS": "1",
                "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}


def substitute(command: str, ws: Workspace, tag: str) -> list[str] | str:
    """The command as it runs here (argv), or why it cannot run here."""
    if command in NOT_HERE:
        return NOT_HERE[command]
    out = ws.root / f"out-{tag}"  # one folder per command
    out.mkdir()
    vanilla = "vanilla" in command  # the PNG-only path
    data_dir = ws.unlabeled if vanilla else ws.labeled
    text = (command.replace("outputs/DATE/TIME", str(ws.run_a))
            .replace("RUN_A", str(ws.run_a)).replace("RUN_B", str(ws.run_b))
            .replace("RUN_DIR", str(ws.run_a))
            .replace("=.../", f"={ws.run_a}/").replace("data.root=data/cartoonset10k",
                                                        f"data.root={ws.labeled}")
            .replace("multirun/DATE/TIME/*",  # the shell's expansion of the glob
                     " ".join(shlex.quote(str(p)) for p in sorted(ws.sweep.iterdir()))))
    argv = [a for a in shlex.split(text) if a != "..."]
    argv = [f"data.root={data_dir}" if a == "data.root=DIR" else a for a in argv]
    argv = [_into(a, out) for a in argv]
    head = " ".join(argv[:3])
    if argv[:2] == ["python", "run.py"] or argv[0] == "torchrun":
        return _training(argv, out)
    if head.startswith("python -m cartoondiff.data.synthesize"):
        return [_set(a, "n", "4") for a in argv]
    if head.startswith("python -m cartoondiff.data.download"):
        return [*argv, f"url={_archive_url(ws)}", "progress=false"]
    if head.startswith("python -m cartoondiff.evaluate.judge"):  # a tiny judge of tiny data
        return [*argv, "data.image_size=16", "data.n=64", "evaluate.classifier.epochs=1"]
    if head.startswith("python -m cartoondiff.evaluate"):  # never the prepared RUN/eval.json
        given = any(a.startswith("out=") for a in argv)
        return [*[_set(a, "n", "8") for a in argv], "classifier_epochs=1",
                *([] if given else [f"out={out / 'eval.json'}"])]
    if head.startswith("python -m cartoondiff.train.memory"):
        return argv
    if head.startswith(("python -m cartoondiff.figures", "python -m cartoondiff.report",
                        "python -m cartoondiff.sample")):
        if "forward" in argv:
            argv += ["data.image_size=16", f"data.cache_dir={ws.cache_dir}"]
        if not any(a.startswith("out=") for a in argv):  # the default lands in the cwd
            argv.append(f"out={out / ('figures' if 'blog' in argv else 'figure.png')}")
        return argv
    if argv[:3] == ["wandb", "leet", "inspect"]:
        return [str(Path(sys.executable).parent / "wandb"), *argv[1:-1],
                str(next((ws.run_a / "wandb").glob("offline-run-*")))]
    if argv[:2] == ["bash", "experiments/cpu_ablations.sh"]:
        # the script's own evaluate.every_epochs=2, typed on its command line, beats the preset
        return ["env", "EXPERIMENTS=fig10_11_onehot fig03_05_vanilla_pm1", "SEEDS=0",
                f"EXTRA={' '.join(TINY_RUN)} data.n=16 trainer.max_steps=4 "
                "evaluate.classifier.epochs=1", "EVAL_N=8", "FROM_STEP=0",
                *argv, str(out / "ablations")]
    pytest.fail(f"the README runner does not know this command; teach it: {command}")


def _into(arg: str, out: Path) -> str:
    """Outputs of ``out=``, ``dest=`` and ``hydra.*.dir=`` go to the temporary folder."""
    key, sep, value = arg.partition("=")
    if sep and key in ("out", "dest") and not value.startswith("/"):
        return f"{key}={out / value}"
    return arg


def _set(arg: str, key: str, value: str) -> str:
    return f"{key}={value}" if arg.startswith(f"{key}=") else arg


def _training(argv: list[str], out: Path) -> list[str]:
    argv = [a for a in argv if a not in TINY_RUN]  # appended below
    sweep = "-m" in argv
    synthetic = "data.root" not in " ".join(argv) or "data=synthetic" in argv
    tiny = [*TINY_RUN, *(["data.n=16"] if synthetic else [])]
    if "hydra/launcher=slurm" in argv:  # no cluster here: compose the job, first sweep value
        argv = [re.sub(r"=([^,]+),.*$", r"=\1", a) for a in argv if a != "-m"]
        return [*argv, "--cfg", "hydra"]
    if argv[0] == "torchrun":
        argv = ["torchrun", "--nproc_per_node=2", *argv[2:]]
        argv = [_set(a, "data.batch_size", "8") for a in argv]
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:], *tiny,
                f"hydra.run.dir={out / 'run'}"]
    given_dir = any(a.startswith("hydra.run.dir=") for a in argv)
    if given_dir and "resume=auto" in argv:  # continue a copy of the prepared run, 2 steps on
        run_dir = out / "resumed"
        source = Path(next(a for a in argv if a.startswith("hydra.run.dir="))[14:])
        shutil.copytree(source, run_dir)
        argv = [f"hydra.run.dir={run_dir}" if a.startswith("hydra.run.dir=") else a
                for a in argv]
        tiny = [t for t in tiny if not t.startswith("trainer.max_steps")]
        tiny += ["experiment=fig15_16_final", "scale=cpu", "data.n=16", "trainer.max_steps=22"]
    dirs = [] if given_dir else [f"hydra.run.dir={out / 'run'}", f"hydra.sweep.dir={out / 'sweep'}"]
    if sweep and "hydra/launcher=local" in argv:
        dirs.append("hydra.launcher.n_jobs=1")
    return [sys.executable, *argv[1:], *tiny, *dirs]


def _archive_url(ws: Workspace) -> str:
    """A local HTTP server of a small archive in the official layout (no network here)."""
    archive = ws.root / "cartoonset10k.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ws.labeled, arcname="cartoonset10k")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        SimpleHTTPRequestHandler, directory=str(ws.root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/{archive.name}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"), cache_dir)


def _cost(argv: list[str]) -> int:
    """A rough rank of how long a command runs here (scripts and DDP > sweeps > trainings)."""
    text = " ".join(map(str, argv))
    if "cpu_ablations.sh" in text or "torch.distributed.run" in text:
        return 3
    if "run.py" in text and "--help" not in text and "--cfg" not in text:
        return 2 if " -m " in text else 1
    return 0


def _run(argv: list[str], ws: Workspace) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, env=ws.env(), capture_output=True, text=True,
                          timeout=600)


def test_the_readme_names_its_commands():
    commands = readme_commands()
    assert len(commands) >= 10, commands
    assert "python run.py -m attention=single,mha4 tau.projections=1x,2x" in commands
    assert "python run.py -m attention=mha4 tau.projections=2x" in commands  # the design card
    assert "python -m cartoondiff.figures blog outputs/DATE/TIME out=figures" in commands
    assert len(docs_commands()) >= 40


def test_every_docs_page_is_collected_or_says_why():
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}
    assert pages == set(DOC_PAGES) | set(NOT_COLLECTED), "add the page to one of them"
    readme = README.read_text(encoding="utf-8")
    assert all(f"`{page}`" in readme for page in DOC_PAGES), "the README links every page"


@pytest.mark.parametrize("source", ["README.md and docs", "experiments/*.yaml"])
def test_every_command_runs_as_written(workspace, source):
    if source == "README.md and docs":
        pages, prefix = docs_commands(), "docs"
    else:
        pages, prefix = dict.fromkeys(experiment_commands_to_run(), "experiments"), "exp"
    runnable, seen = [], set()
    for i, (c, page) in enumerate(pages.items()):
        argv = substitute(c, workspace, f"{prefix}{i}")
        # the same code run twice is run once: `python run.py debug=smoke` runs here as
        # `python run.py` does, and `out=a.png` or no `out=` write the same picture
        same = tuple(str(a).replace(f"out-{prefix}{i}", "out") for a in argv
                     if not str(a).startswith("out="))
        if isinstance(argv, list) and same not in seen:
            runnable.append((c, page, argv))
            seen.add(same)
    runnable.sort(key=lambda job: -_cost(job[2]))  # the longest first: no long tail on a core
    with ThreadPoolExecutor(2) as pool:  # two cores: one-thread commands two at a time
        results = list(pool.map(lambda job: _run(job[2], workspace), runnable))
    failed = [f"{c}  ({page})\n  ran: {shlex.join(map(str, argv))}\n  {r.stderr.strip()[-1500:]}"
              for (c, page, argv), r in zip(runnable, results) if r.returncode != 0]
    assert not failed, "\n\n".join(failed)
    assert len(runnable) >= (30 if prefix == "docs" else 5)
    if prefix != "docs":  # the rest were run by the README and docs test
        assert len(experiment_commands()) >= 15


def test_a_mistake_in_a_readme_command_is_one_line_and_exit_2(workspace):
    result = _run([sys.executable, "run.py", *TINY_RUN, "model.unet.num_heads=3",
                   f"hydra.run.dir={workspace.root / 'bad'}"], workspace)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: model.unet.num_heads=3 is invalid")
    assert "Traceback" not in result.stderr
