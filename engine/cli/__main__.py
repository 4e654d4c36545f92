"""`python -m engine.cli ...` (the detached worker is started this way): the same as `compfair`."""

import sys

from engine.cli import main

sys.exit(main())
