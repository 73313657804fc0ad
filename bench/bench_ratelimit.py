"""Cost of the per-key rate limiter: GET /v1/jobs/{id} latency with the token bucket on and off.

Two apps on one private redis-server, in this process (FastAPI's TestClient, no sockets), requests
interleaved so machine load hits both alike:

    OMP_NUM_THREADS=1 python bench/bench_ratelimit.py [--requests 2000]

The store is the local folder (no S3 call on this route). Prints median and p99 of each, and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_service import start_redis  # noqa: E402
from tests.fixtures.service import API_KEYS  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args(argv)
    from fastapi.testclient import TestClient

    from api.main import create_app
    from sjc_service.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="sjc-bench-rl-"))
    redis_sp, redis_url = start_redis(tmp)
    try:
        base = Settings(redis_url=redis_url, store="local", local_store_dir=str(tmp / "store"),
                        api_keys=",".join(f"{o}:{k}" for o, k in API_KEYS.items()))
        apps = {"limiter on": create_app(base.model_copy(update={"rate_limit_burst": 10**9})),
                "limiter off": create_app(base.model_copy(update={"rate_limit_per_min": 0}))}
        headers = {"Authorization": f"Bearer {API_KEYS['alice']}"}
        clients = {name: TestClient(app).__enter__() for name, app in apps.items()}
        job_id = clients["limiter off"].post("/v1/jobs", json={"prompt": "a red cube"}, headers=headers).json()["id"]
        times: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(args.requests + 100):
            for name, client in clients.items():
                t = time.perf_counter()
                r = client.get(f"/v1/jobs/{job_id}", headers=headers)
                if i >= 100:  # warm-up
                    times[name].append(1000 * (time.perf_counter() - t))
                assert r.status_code == 200, r.text
        for name, ms in times.items():
            ms.sort()
            print(f"{name}: median {statistics.median(ms):.2f} ms, p99 {ms[int(0.99 * len(ms))]:.2f} ms "
                  f"({len(ms)} requests)")
        diff = statistics.median(times["limiter on"]) - statistics.median(times["limiter off"])
        print(f"difference of medians: {diff:.2f} ms per request")
        for client in clients.values():
            client.__exit__(None, None, None)
    finally:
        redis_sp.stop()


if __name__ == "__main__":
    main()
