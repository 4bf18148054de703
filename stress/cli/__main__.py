"""``python -m stress.cli ...``: the same as the ``stress`` console script."""

import sys

from stress.cli import main

sys.exit(main())
