"""``python -m segkit`` runs the command-line interface."""

import sys

from segkit.cli import main

sys.exit(main())
