"""`python -m jobs generate ...`: the local generation command (jobs.tools.generate)."""

import sys

from jobs.tools.generate import main

sys.exit(main())
