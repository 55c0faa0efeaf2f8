"""The training command: ``python run.py``, ``cartoondiff-train`` and ``python -m cartoondiff.run``.

A Hydra app over the package's configs (``cli.conf_dir()``: the repository's ``conf/`` or the
copy an installed wheel holds), so sweeps (``-m``), ``--help``, ``--cfg job`` and shell
completion (``--shell-completion``/``-sc``) work in every form. The work happens in
``cartoondiff.train.train``. A mistake in a config value, a data file or a checkpoint prints
one line naming it and exits with status 2 (``CARTOONDIFF_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``
keeps the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cartoondiff.runs.cli import COMMAND_ENV, compose, conf_dir, execute
from cartoondiff.runs.files import check_folder

# Hydra flags after which the command line is Hydra's own business, and those taking a value.
UNCHECKED_FLAGS = ("-sc", "--shell-completion", "-cp", "-cn", "-cd", "--hydra-help",
                   "--version", "-i", "--experimental-rerun")
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p")


def _train(cfg: DictConfig) -> None:
    from cartoondiff.train import train

    def train_and_exit(argv: list[str]) -> None:  # noqa: ARG001 -- Hydra parsed the command
        metrics = train(cfg)
        if metrics.get("stopped_by_signal"):
            # Exit as a killed process would, so retry wrappers (`until python run.py
            # resume=auto ...; do ...`) see a preemption, not a finished run.
            sys.exit(128 + metrics["stopped_by_signal"])

    execute(train_and_exit, [])


def main() -> None:
    """Console script ``cartoondiff-train``: compose the config from the command line, train."""
    # how the command was typed, for its --help and the resume line it prints on a stop
    os.environ[COMMAND_ENV] = typed_command()
    if os.environ.get("RANK", "0") != "0":
        # torchrun: ranks > 0 write nothing of their own (train() uses rank 0's folder for
        # everything): no Hydra folder, no run.log; their warnings go to stderr.
        sys.argv += ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"]
    else:
        execute(check_command_line, sys.argv[1:])
    # Hydra names the job after the task's module: "run" (run.log) in every form.
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_train)()


def typed_command() -> str:
    """``python run.py``, ``cartoondiff-train`` or ``python -m cartoondiff.run``."""
    program = Path(sys.argv[0])
    if program.name.startswith("cartoondiff-"):
        return program.name
    return "python -m cartoondiff.run" if program.resolve() == Path(__file__).resolve() \
        else "python run.py"


def check_command_line(args: list[str]) -> None:
    """The overrides composed before Hydra runs, so a mistake in one is a single line and
    exit 2 (Hydra prints several lines, or a traceback after --help); each value of a sweep
    is composed once, beside the others' first values. Where Hydra is asked for something
    else (shell completion, another config), it is left to Hydra. The run and sweep folders
    must be folders that can be written."""
    if any(a in UNCHECKED_FLAGS or a.startswith(("--config", "--info")) for a in args):
        return
    overrides = [a for i, a in enumerate(args) if not a.startswith("-")
                 and not (i and args[i - 1] in FLAGS_WITH_VALUE)]
    choices = [sweep_values(o) for o in overrides]
    firsts = [values[0] for values in choices]
    compose(firsts)
    for i, values in enumerate(choices):
        for other in values[1:]:
            compose([*firsts[:i], other, *firsts[i + 1:]])
    for override in overrides:
        key, _, value = override.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            check_folder(key, value)


def sweep_values(override: str) -> list[str]:
    """``key=a,b`` -> ``[key=a, key=b]`` (also ``range()`` and ``choice()``); any other
    override -> ``[override]``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([override])[0]
        if parsed.is_sweep_override():
            key = parsed.get_key_element()
            return [f"{key}={value}" for value in parsed.sweep_string_iterator()]
    except Exception:  # noqa: BLE001 -- what Hydra cannot parse, composing names
        pass
    return [override]


if __name__ == "__main__":
    main()
