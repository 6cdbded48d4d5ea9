"""``python -m rnnforge`` is the ``rnnforge`` command (handy inside ``ray job submit``)."""

import sys

from rnnforge.cli import main

sys.exit(main())
