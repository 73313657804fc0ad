"""``python -m sjc_cli generate ...``: the same as the ``sjc`` command."""

import sys

from sjc_cli import main

sys.exit(main())
