"""`python -m engine.cli ...` (the detached worker is started this way): the same as `compfair`."""

import sys

from engine.cli import main

if __name__ == "__main__":          # importing this module (e.g. to check imports) runs nothing
    sys.exit(main())
