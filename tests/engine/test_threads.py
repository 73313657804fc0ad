"""Thread defaults: OpenMP's passive wait policy before torch loads, torch threads from SJC_THREADS or the cores."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sjc_engine.threads import ENV_THREADS, apply_openmp_defaults, default_threads


def test_openmp_default_is_passive_and_a_user_choice_wins() -> None:
    env: dict[str, str] = {}
    assert apply_openmp_defaults(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_openmp_defaults(env) == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_threads_from_the_environment_or_the_usable_cores() -> None:
    assert default_threads({ENV_THREADS: "3"}) == 3
    assert default_threads({}) == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=ENV_THREADS):
            default_threads({ENV_THREADS: bad})


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", ENV_THREADS, "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def test_cli_sets_the_policy_before_torch_loads_and_the_threads_after() -> None:
    # importing the CLI (and the worker's app) loads no torch, so main() can set the policy first
    code = (
        "import os, sys\n"
        "import sjc_engine.cli as cli, worker.celery_app\n"
        "assert 'torch' not in sys.modules\n"
        "cli.main(['sample2d', 'a red cube', '--out', '/nonexistent/x', '--steps', '0', '--threads', '1', "
        "'--model', '/nonexistent/model'])\n"
        "import torch\n"
        "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())\n"
    )
    assert _run(code) == "PASSIVE 1"
    assert _run(code.replace("'--threads', '1', ", ""), SJC_THREADS="2") == "PASSIVE 2"


def test_cli_caps_torch_threads_at_the_models_recommendation(tmp_path) -> None:
    code = (
        "import sjc_engine.cli as cli, sjc_engine.parallel as par, torch\n"
        f"cli.main(['sample2d', 'a red cube', '--out', {str(tmp_path)!r}, '--steps', '1'])\n"
        "print('threads', torch.get_num_threads(), par.workers())\n"
    )
    assert _run(code, SJC_THREADS="2").splitlines()[-1] == "threads 1 2"  # the embedded model's torch_threads: 1
    assert _run(code, SJC_THREADS="1").splitlines()[-1] == "threads 1 1"
    other = code.replace("'--steps', '1'", "'--steps', '0', '--model', '/nonexistent/model'")
    assert _run(other, SJC_THREADS="2").splitlines()[-1] == "threads 2 2"  # no recommendation: torch takes all


def test_set_torch_threads_splits_the_run_between_torch_and_the_pool() -> None:
    code = (
        "import torch, sjc_engine.parallel as par\n"
        "from sjc_engine.threads import set_torch_threads\n"
        "print(set_torch_threads(3, torch_threads=1), torch.get_num_threads(), par.workers())\n"
        "print(set_torch_threads(2), torch.get_num_threads(), par.workers())\n"
        "print(set_torch_threads(2, torch_threads=8), torch.get_num_threads(), par.workers())\n"
    )
    assert _run(code).splitlines() == ["1 1 3", "2 2 2", "2 2 2"]
