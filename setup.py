"""Build hook: ship the top-level ``conf/`` and ``experiments/`` inside the package.

The repository keeps one copy of each at the top level (the layout users read, with
``conf/experiment -> ../experiments``); a wheel gets them as ``cartoondiff/conf/`` and
``cartoondiff/conf/experiment/``, where ``cartoondiff.runs.cli.conf_dir`` finds them when no source
tree is beside the package. Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """``build_py`` plus the config tree copied to ``cartoondiff/conf`` (YAML files only)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads conf/ from the source tree itself
        if not (ROOT / "conf" / "config.yaml").is_file():
            raise FileNotFoundError(f"{ROOT / 'conf'}: no config.yaml to ship in the package")
        target = Path(self.build_lib) / "cartoondiff" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        for source, dest in ((ROOT / "conf", target), (ROOT / "experiments",
                                                         target / "experiment")):
            for path in sorted(source.rglob("*.yaml")):
                if path.relative_to(source).parts[0] == "experiment":
                    continue  # the symlink to experiments/, copied from there
                out = dest / path.relative_to(source)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out)


setup(cmdclass={"build_py": BuildPyWithConfigs})
