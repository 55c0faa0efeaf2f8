"""Train a cartoon-avatar diffusion model: ``python run.py [group=option ...] [key=value ...]``.

The same Hydra app as the installed ``cartoondiff-train`` command (``cartoondiff/run.py``):
``-m`` sweeps, ``--help``, ``--cfg job``. The work happens in ``cartoondiff.train.train``.
"""

from cartoondiff.run import main

if __name__ == "__main__":
    main()
