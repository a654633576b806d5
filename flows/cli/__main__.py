"""`python -m flows.cli`: the `refsr` command without its console script."""

import sys

from flows.cli.commands import main

sys.exit(main())
