"""``python -m lensfinder``: the same as the ``lensfinder`` console command."""

import sys

from lensfinder.cli import main

sys.exit(main())
