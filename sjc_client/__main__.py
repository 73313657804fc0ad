"""``python -m sjc_client submit "a red cube" --wait``."""

import sys

from sjc_client.cli import main

sys.exit(main())
