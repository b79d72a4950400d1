"""``python -m stockgym.cli``: the same as the ``stockgym`` command."""

import sys

from stockgym.cli import main

sys.exit(main())
