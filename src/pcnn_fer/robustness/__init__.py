"""``pcnn robustness``: accuracy of any loadable model under controlled corruptions of the aligned face.

:mod:`.corruptions` holds the pure tensor functions, :mod:`.run` the benchmark, :mod:`.stats` the seeded face subset
and the confidence intervals, :mod:`.options` the typed options (seed, subset size, batch size) and :mod:`.command`
the command (``robustness.json`` and one plot, :mod:`.plot`); the argument parsing is in
:mod:`pcnn_fer.cli.robustness`.
"""
