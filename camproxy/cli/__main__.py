"""``python -m camproxy.cli``: the ``camproxy`` command."""

import sys

from camproxy.cli import main

sys.exit(main())
