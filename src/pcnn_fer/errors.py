"""One base class for every error the project reports to a user as a single line (``pcnn`` prints it, no traceback).

Subclasses keep a built-in base (``ValueError``, ``RuntimeError``) so that library callers catching those still work.
Messages name the file (and line, where there is one) they are about.
"""

from __future__ import annotations

__all__ = ["PCNNError", "UsageError"]


class PCNNError(Exception):
    """An expected failure caused by input, configuration or environment: printed as one line by ``pcnn``."""


class UsageError(PCNNError, ValueError):
    """A bad argument or option value (command line or API)."""
