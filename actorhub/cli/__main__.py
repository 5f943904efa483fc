"""`python -m actorhub.cli`: the same as the `actorhub` console script."""

import sys

from actorhub.cli import main

sys.exit(main())
