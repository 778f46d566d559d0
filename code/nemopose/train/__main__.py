"""``python -m nemopose.train``: see :mod:`nemopose.train.loop`."""

import sys

from ..cli import run
from .loop import main

sys.exit(run(main))
