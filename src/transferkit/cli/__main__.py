"""`python -m transferkit.cli ...`, the same as the `transferkit` command."""

import sys

from transferkit.cli.main import main

sys.exit(main())
