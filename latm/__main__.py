"""``python -m latm`` runs the ``latm`` command line."""

import sys

from latm.cli import main

sys.exit(main())
