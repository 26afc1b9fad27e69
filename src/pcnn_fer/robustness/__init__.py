"""``pcnn robustness``: accuracy of any loadable model under controlled corruptions of the aligned face.

:mod:`.corruptions` holds the pure tensor functions, :mod:`.run` the benchmark (``robustness.json`` and one plot);
the argument parsing is in :mod:`pcnn_fer.cli.robustness`.
"""
