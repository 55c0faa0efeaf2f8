"""Run plumbing, beneath the science: what a command or a training run needs besides maths.

The run folder and its records (``folder``, ``records``), run names (``naming``), W&B and
metrics tracking (``tracking``), atomic files and locks (``files``), stop requests
(``interrupt``), progress bars (``progress``), the errors a user can cause (``errors``),
command-line parsing (``cli``) and device and precision choice (``devices``). Nothing here
imports the models, the diffusion process or the training loop.
"""
