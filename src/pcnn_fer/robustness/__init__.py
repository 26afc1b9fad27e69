"""``pcnn robustness``: accuracy of any loadable model under controlled corruptions of the aligned face.

:mod:`.corruptions` holds the pure tensor functions, :mod:`.run` the benchmark (``robustness.json`` and one plot),
:mod:`.cli` the argument parsing (no torch import at module level, so ``pcnn --help`` stays fast).
"""
