"""Service benchmark: POST /v1/jobs latency and throughput, and time from POST to a warm worker's first step.

By default it starts its own stack on this machine (a private redis-server, moto's S3 server, the API
with uvicorn and, for the second part, one Celery worker), all as subprocesses on free ports:

    OMP_NUM_THREADS=1 python bench/bench_service.py [--requests 300] [--concurrency 8] [--first-step-runs 3] [--record]

``--record`` adds a row to the "Service" section of bench/RESULTS.md. Numbers include the HTTP client
(httpx, same machine) and auth; jobs created for the latency part are never run (no worker yet).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fixtures.service import (  # noqa: E402
    API_KEYS,
    AWS_TEST_CREDS,
    TestModel,
    _spawn,
    free_port,
    make_service_env,
    start_api,
    start_worker,
    wait_until,
)

AUTH = {"Authorization": f"Bearer {API_KEYS['alice']}"}
BODY = {"prompt": "a red sphere", "steps": 200, "grid_size": 24, "video_frames": 2, "preview_every": 0}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def start_redis(tmp: Path):
    import redis

    port = free_port()
    sp = _spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                          "no", "--dir", str(tmp)], {}, tmp)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: _ping(redis.Redis.from_url(url)), 15, what="redis-server")
    return sp, url


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False


def start_moto(tmp: Path):
    import os

    port = free_port()
    sp = _spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                {**os.environ, **AWS_TEST_CREDS}, tmp)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(up, 30, what="moto server")
    return sp, url


def pick_model(name: str | None, tmp: Path) -> TestModel:
    """``name``, else the embedded model when shipped, else a tiny random pixel model built here."""
    from sjc_engine.catalog import EMBEDDED_DIR, META_FILE

    if name:
        return TestModel(name)
    if (EMBEDDED_DIR / META_FILE).is_file():
        return TestModel("embedded")
    from tests.fixtures.models import build_tiny_pixel

    path = build_tiny_pixel(tmp / "models" / "tiny-pixel")
    return TestModel(path.name, (str(path.parent),))


def bench_post(api_url: str, n: int, concurrency: int) -> dict[str, float]:
    """Sequential latency (keep-alive client), then throughput with ``concurrency`` threads."""
    lat: list[float] = []
    with httpx.Client(base_url=api_url, headers=AUTH, timeout=30) as c:
        for _ in range(10):  # warm-up
            c.post("/v1/jobs", json=BODY)
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/v1/jobs", json=BODY)
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 202, r.text
    local = threading.local()

    def one(_i: int) -> None:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=api_url, headers=AUTH, timeout=30)
        r = local.c.post("/v1/jobs", json=BODY)
        assert r.status_code == 202, r.text

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return {"p50_ms": 1000 * percentile(lat, 50), "p99_ms": 1000 * percentile(lat, 99),
            "mean_ms": 1000 * statistics.mean(lat), "throughput_rps": n / wall}


def bench_first_step(api_url: str, redis_url: str, runs: int) -> list[float]:
    """Seconds from sending POST /v1/jobs to the first "progress" event (step 1) of a warm worker."""
    from sjc_service.connections import redis_from_url
    from sjc_service.events import EventStream

    events = EventStream(redis_from_url(redis_url))
    out: list[float] = []
    with httpx.Client(base_url=api_url, headers=AUTH, timeout=30) as c:
        for i in range(runs + 1):  # the first run warms the worker (model load) and is not counted
            t0 = time.perf_counter()
            resp = c.post("/v1/jobs", json={**BODY, "steps": 20})
            assert resp.status_code == 202, resp.text
            job = resp.json()
            last = "0"
            first = None
            deadline = time.monotonic() + 300
            while first is None and time.monotonic() < deadline:
                for eid, ev, data in events.read(job["id"], last, block_ms=1000):
                    last = eid
                    if ev == "progress" and first is None:
                        first = time.perf_counter() - t0
            if first is None:
                raise TimeoutError("no progress event within 300 s")
            if i > 0:
                out.append(first)
            c.post(f"/v1/jobs/{job['id']}/cancel")
            wait_until(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] in ("canceled", "succeeded"), 60)
    return out


def record(row: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    header = (
        "## Service (bench_service.py)\n\n"
        "POST /v1/jobs latency (sequential, keep-alive) and throughput (threads), API + Redis + moto S3 on this machine; "
        "time from POST to a warm worker's first optimiser step (model already loaded; queue empty). "
        "Command: `OMP_NUM_THREADS=1 python bench/bench_service.py --record`.\n\n"
        "| date | machine | requests | POST p50 ms | POST p99 ms | throughput req/s (threads) | POST -> first step s (median, runs) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
    )
    if "## Service (bench_service.py)" not in text:
        text = text.rstrip("\n") + "\n\n" + header
    start = text.index("## Service (bench_service.py)")
    nxt = text.find("\n## ", start + 5)
    section = text[start:] if nxt < 0 else text[start:nxt + 1]
    new_section = section.rstrip("\n") + "\n" + row + "\n"
    text = text.replace(section, new_section if nxt < 0 else new_section + "\n")
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--first-step-runs", type=int, default=3)
    ap.add_argument("--model", default=None, help="model name (default: embedded)")
    ap.add_argument("--record", action="store_true", help="add a row to bench/RESULTS.md")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="sjc-bench-"))
    procs = []
    try:
        redis_sp, redis_url = start_redis(tmp)
        moto_sp, moto_url = start_moto(tmp)
        procs += [redis_sp, moto_sp]
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        from sjc_service.store import S3Store

        S3Store(bucket, endpoint_url=moto_url, access_key_id="testing", secret_access_key="testing").ensure_bucket()
        model = pick_model(args.model, tmp)
        print(f"model: {model.name} {list(model.model_dirs) or ''}")
        env = make_service_env(redis_url, moto_url, bucket, model, tmp)
        env["SJC_MAX_ACTIVE_JOBS_PER_KEY"] = "1000000"
        env["SJC_RATE_LIMIT_BURST"] = "1000000000"  # the per-key limiter runs (its cost counts) but never refuses
        env["SJC_CHECKPOINT_EVERY"] = "0"
        api = start_api(env, tmp)
        procs.append(api)

        post = bench_post(api.url, args.requests, args.concurrency)
        print(f"POST /v1/jobs: p50 {post['p50_ms']:.1f} ms, p99 {post['p99_ms']:.1f} ms, mean {post['mean_ms']:.1f} ms "
              f"({args.requests} sequential); throughput {post['throughput_rps']:.0f} req/s "
              f"({args.requests} requests, {args.concurrency} threads)")

        import redis

        r = redis.Redis.from_url(redis_url)
        r.delete(env.get("SJC_QUEUE_NAME", "gpu"))  # drop the benchmark jobs' messages: no worker runs them
        worker = start_worker(env, tmp)
        procs.append(worker)
        firsts = bench_first_step(api.url, redis_url, args.first_step_runs)
        med = statistics.median(firsts)
        print(f"POST -> first optimiser step (warm worker): median {med:.3f} s over {len(firsts)} runs "
              f"({', '.join(f'{x:.3f}' for x in firsts)})")
        machine = f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, Python {platform.python_version()}"
        row = (f"| {date.today().isoformat()} | {machine}; model {model.name} | {args.requests} | {post['p50_ms']:.1f} | "
               f"{post['p99_ms']:.1f} | {post['throughput_rps']:.0f} ({args.concurrency}) | {med:.3f} ({len(firsts)}) |")
        if args.record:
            record(row)
            print("recorded in bench/RESULTS.md")
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    main()
