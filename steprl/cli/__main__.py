"""`python -m steprl.cli ...`: the same as the `steprl` console script."""

import sys

from steprl.cli import main

sys.exit(main())
