"""Run plumbing, beneath the science: what a command or a training run needs besides maths.

The run folder and its records (``folder``, ``records``), run names (``naming``), W&B and
metrics tracking (``tracking``), atomic files and locks (``files``), stop requests
(``interrupt``), progress bars (``progress``), the errors a user can cause (``errors``),
command-line parsing (``cli``) and device and precision choice (``devices``). Nothing here
imports any other part of cartoondiff (tests/test_package.py checks it): what is science's,
such as a metric's W&B name or loading a checkpoint to resume, is passed in or lives above.
"""
