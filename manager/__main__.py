"""``python -m manager --config FILE`` (the same as ``cloudimaging manager``)."""

import sys

from manager.cli import main

sys.exit(main())
