"""``python -m pcnn_fer.cli``: the ``pcnn`` command."""

import sys

from . import main

sys.exit(main())
