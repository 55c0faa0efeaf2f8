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
import tempfile

import hydra
from omegaconf import DictConfig

from cartoondiff.runs.cli import conf_dir


def _train(cfg: DictConfig) -> None:
    from cartoondiff.runs.cli import execute
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
    if os.environ.get("RANK", "0") != "0":
        # torchrun: Hydra would give every process its own output directory. Ranks > 0 get a
        # throwaway one; train() uses rank 0's for everything.
        sys.argv += ["hydra.output_subdir=null",
                     f"hydra.run.dir={tempfile.gettempdir()}/cartoondiff-rank{os.environ['RANK']}"]
    # Hydra names the job after the task's module: "run" (run.log) in every form.
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_train)()


if __name__ == "__main__":
    main()
