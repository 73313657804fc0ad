"""The ``sjc`` commands for a server (status, cancel, list, download, delete) against a real API process,
and the command line's own promises: every generate flag says its default, submit uses generate's flag
names, ``sjc --version``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from sjc_client import cli
from tests.fixtures.service import API_KEYS, ROOT

KEY = API_KEYS["alice"]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_generate_flag_names_its_default():
    from sjc_engine.cli import build_parser

    generate = subcommands(build_parser())["generate"]
    for action in generate._actions:
        if action.dest in ("help", "prompt") or action.required:
            continue
        assert action.help and "default" in action.help, (action.option_strings, action.help)


def test_submit_takes_generates_flag_names_for_the_same_settings():
    from sjc_engine.cli import build_parser

    generate = subcommands(build_parser())["generate"]
    client = subcommands(cli.build_parser())
    submit = client["submit"]
    for flags, opts in cli.RUN_FLAGS:
        for flag in flags:
            assert flag in generate._option_string_actions, flag
            assert generate._option_string_actions[flag].dest == submit._option_string_actions[flag].dest, flag
    for action in submit._actions:  # every submit flag says its default too
        if action.dest not in ("help", "prompt"):
            assert "default" in (action.help or ""), action.option_strings
    assert {"status", "cancel", "list", "download", "delete", "submit", "usage"} <= set(client)


def test_sjc_version():
    for module in ("sjc_cli", "sjc_client"):  # sjc_cli: the ``sjc`` command
        proc = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("0.1.0"), proc.stdout + proc.stderr


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_status_list_download_cancel_delete_against_the_api(api_server, s3_store, tmp_path, capsys):
    conn = ["--server", api_server.url, "--api-key", KEY]
    code, out, err = run(capsys, "submit", "a red cube", "--grid", "12", "--steps", "4",
                         "--outputs", "mesh", "video", *conn)
    assert code == 0, err
    job = json.loads(out)
    job_id = job["id"]
    assert job["params"]["grid_size"] == 12 and job["params"]["outputs"] == ["mesh", "video"]

    code, out, _ = run(capsys, "status", job_id, *conn)
    assert code == 0 and json.loads(out)["status"] == "queued"
    code, out, _ = run(capsys, "list", "--status", "queued", *conn)
    assert code == 0 and [j["id"] for j in json.loads(out)["items"]] == [job_id]

    s3_store.put_bytes(f"jobs/{job_id}/mesh.glb", b"glTF-bytes", "model/gltf-binary")
    code, out, _ = run(capsys, "download", job_id, "--out", str(tmp_path / "dl"), *conn)
    assert code == 0 and (tmp_path / "dl" / "mesh.glb").read_bytes() == b"glTF-bytes" and "1 files" in out

    code, out, _ = run(capsys, "cancel", job_id, *conn)
    assert code == 0 and json.loads(out)["status"] == "canceled"
    code, out, _ = run(capsys, "delete", job_id, *conn)
    assert code == 0 and out.strip() == f"job {job_id} deleted"
    assert s3_store.list(f"jobs/{job_id}/") == []
    code, _, err = run(capsys, "status", job_id, *conn)
    assert code == 2 and "404" in err
    code, out, _ = run(capsys, "delete", job_id, *conn)  # repeatable
    assert code == 0
