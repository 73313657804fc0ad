"""Command line of the client: ``sjc submit "a red cube" --wait --out out/red-cube``.

``add_submit_parser`` plugs ``submit`` into the engine's ``sjc`` command (the engine itself may
not import HTTP libraries); ``python -m sjc_client`` runs the same commands plus ``status``,
``cancel``, ``list``, ``download`` and ``models``.

Exit codes: 0 done; 1 the job failed or was canceled; 2 bad usage or a request the API refused;
3 the API could not be reached; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sjc_client.client import SJCClient
from sjc_client.errors import ApiError, JobFailed, SJCClientError

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=os.environ.get("SJC_SERVER", DEFAULT_SERVER),
        help="API address (env SJC_SERVER; default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("SJC_API_KEY"),
        help="bearer API key (env SJC_API_KEY)",
    )


def add_submit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``submit`` command to an ``argparse`` sub-parser set; returns the new parser.

    The parser's default ``func`` is :func:`run_submit` (``args.func(args)`` returns the exit code).
    """
    p = subparsers.add_parser(
        "submit", help="send a prompt to an SJC server (optionally wait and download the results)",
        description="Submit a text-to-3D job to an SJC API server.",
    )
    p.add_argument("prompt", help='the text prompt, e.g. "a red cube"')
    _add_connection_args(p)
    p.add_argument("--wait", action="store_true", help="follow progress until the job ends, then download")
    p.add_argument("--out", type=Path, default=None, help="folder for the results (default out/<job id>)")
    p.add_argument("--no-download", action="store_true", help="with --wait: print the links, download nothing")
    p.add_argument("--model", default=None, help='model name or server-side path (server default: "embedded")')
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (model default when omitted)")
    p.add_argument("--seed", type=int, default=None, help="random seed (server picks one when omitted)")
    p.add_argument("--guidance", type=float, default=None, dest="guidance_scale", help="guidance scale")
    p.add_argument("--grid-size", type=int, default=None, help="voxels per side")
    p.add_argument("--outputs", default=None, help="comma list of checkpoint,video,mesh,previews")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other job setting, e.g. --param video_frames=30 (VALUE read as JSON when it parses)")
    p.add_argument("--idempotency-key", default=None, help="repeat-safe submission key")
    p.add_argument("--cancel-on-interrupt", action="store_true", help="with --wait: Ctrl-C cancels the job")
    p.set_defaults(func=run_submit)
    return p


def run_submit(args: argparse.Namespace) -> int:
    """Run ``submit`` from parsed arguments; returns the exit code."""
    params: dict[str, Any] = {
        "model": args.model, "steps": args.steps, "seed": args.seed,
        "guidance_scale": args.guidance_scale, "grid_size": args.grid_size,
        "outputs": args.outputs.split(",") if args.outputs else None,
    }
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --param wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    with SJCClient(args.server, args.api_key) as client:
        def body() -> int:
            job = client.submit(args.prompt, idempotency_key=args.idempotency_key, **params)
            job_id = job["id"]
            print(f"job {job_id} {job.get('status', 'queued')}", file=sys.stderr)
            if not args.wait:
                print(json.dumps(job, indent=2))
                return 0
            try:
                record = _follow(client, job_id)
            except KeyboardInterrupt:
                if args.cancel_on_interrupt:
                    client.cancel(job_id)
                    print(f"\ncancel requested for job {job_id}", file=sys.stderr)
                else:
                    print(f"\nstopped following job {job_id}; it goes on "
                          f"(cancel: python -m sjc_client cancel {job_id})", file=sys.stderr)
                return 130
            _report(client, record, None if args.no_download else (args.out or Path("out") / job_id))
            return 0

        return _guard(body)


def _follow(client: SJCClient, job_id: str) -> dict[str, Any]:
    """``client.wait`` with a tqdm progress bar fed by the event stream."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", desc="queued", dynamic_ncols=True)

    def on_event(event: str, data: Any) -> None:
        if not isinstance(data, dict) or event not in ("state", "progress"):
            return
        total = data.get("total") or data.get("total_steps")
        if total and bar.total != total:
            bar.total = int(total)
        if data.get("step") is not None:
            bar.n = int(data["step"])  # also moves back/forward when a job resumes from a checkpoint
        if event == "state":
            label = str(data.get("stage") or data.get("status") or "")
            if int(data.get("attempt") or 1) > 1:
                label += f" (attempt {data['attempt']})"
            bar.set_description(label)
        else:
            postfix: dict[str, Any] = {}
            losses = data.get("losses")
            if isinstance(losses, dict):
                postfix.update({k: f"{v:.3g}" for k, v in losses.items() if isinstance(v, (int, float))})
            if data.get("eta_s") is not None:
                postfix["eta"] = f"{float(data['eta_s']):.0f}s"
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    try:
        record = client.wait(job_id, on_progress=on_event)
        if bar.total:
            bar.n = bar.total
        bar.set_description("succeeded")
        return record
    finally:
        bar.close()


def _report(client: SJCClient, record: dict[str, Any], out: Path | None) -> None:
    """Print the artifact links and, when ``out`` is given, download the files there."""
    job_id = record["id"]
    print(f"job {job_id} succeeded")
    for artifact in client.artifacts(job_id):
        print(f"  {artifact.get('name') or artifact.get('key')}: {artifact.get('url')}")
    if out is not None:
        paths = client.download(job_id, out)
        print(f"downloaded {len(paths)} files to {out.resolve()}")
        for name in ("turntable.mp4", "mesh.glb", "mesh.ply", "mesh.obj", "field.pt"):
            if (out / name).is_file():
                print(f"  {out / name}")


def _guard(body: Any) -> int:
    """Run ``body`` and turn client errors into messages and exit codes."""
    try:
        return int(body())
    except JobFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.status < 500 else 3
    except SJCClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


# -- python -m sjc_client: the other commands -----------------------------------------------------

def _command(name: str, help_text: str, subparsers: Any, action: Any, job: bool = True) -> argparse.ArgumentParser:
    """Add a command that calls ``action(client, args)`` and prints its result as JSON."""
    p = subparsers.add_parser(name, help=help_text)
    if job:
        p.add_argument("job_id")
    _add_connection_args(p)

    def run(args: argparse.Namespace) -> int:
        def body() -> int:
            with SJCClient(args.server, args.api_key) as client:
                print(json.dumps(action(client, args), indent=2, default=str))
            return 0

        return _guard(body)

    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m sjc_client``."""
    parser = argparse.ArgumentParser(prog="python -m sjc_client", description="Client of the SJC jobs API.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_submit_parser(sub)
    _command("status", "print a job's record", sub, lambda c, a: c.get(a.job_id))
    _command("cancel", "cancel a job", sub, lambda c, a: c.cancel(a.job_id))
    _command("models", "list the server's models", sub, lambda c, a: c.models(), job=False)
    p = _command("list", "list your jobs, newest first", sub,
                 lambda c, a: c.list(status=a.status, cursor=a.cursor, limit=a.limit), job=False)
    p.add_argument("--status", default=None)
    p.add_argument("--cursor", default=None)
    p.add_argument("--limit", type=int, default=20)
    p = _command("download", "download a finished job's files", sub,
                 lambda c, a: [str(x) for x in c.download(a.job_id, a.out or Path("out") / a.job_id)])
    p.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m sjc_client``."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
