"""Shared pytest set-up: the repository root on sys.path and the fixture modules.

Fixtures live in tests/fixtures/ by area (models.py: tiny diffusion models saved offline;
service.py: a real redis-server, moto's S3 server, Celery workers and the API as processes).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # 2 spinning threads on a busy machine: 10x+ slower steps

from tests.fixtures.models import *  # noqa: E402,F401,F403
from tests.fixtures.service import *  # noqa: E402,F401,F403
from tests.fixtures.browser import *  # noqa: E402,F401,F403
from tests.fixtures.page import *  # noqa: E402,F401,F403
