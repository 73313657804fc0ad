"""Command line of the client: ``sjc submit "a red cube" --wait --out out/red-cube``.

``add_client_commands`` plugs ``submit``, ``status``, ``cancel``, ``list``, ``download``, ``delete``,
``models`` and ``usage`` into the ``sjc`` command beside ``generate``; ``python -m sjc_client`` runs the
same commands. ``submit`` takes the job settings under the same flag names as ``sjc generate``.

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
        help="bearer API key (env SJC_API_KEY; default: none)",
    )


def _comma_list(values: list[str] | None) -> list[str] | None:
    """``["mesh", "video"]`` from ``--outputs mesh video`` or ``--outputs mesh,video``."""
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


# The job settings of ``submit``: the same flag names (and dests) as ``sjc generate`` for the same
# setting; the server fills in what is left out with the model's recommendation.
RUN_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--model",), {"default": None, "help": 'model name (default: the server\'s, "embedded")'}),
    (("--steps",), {"type": int, "default": None, "help": "optimiser steps (default: the model's recommendation)"}),
    (("--seed",), {"type": int, "default": None, "help": "random seed (default: drawn by the server and recorded)"}),
    (("--guidance",), {"type": float, "default": None, "dest": "guidance_scale",
                       "help": "classifier-free guidance scale (default: the model's)"}),
    (("--grid", "--grid-size"), {"type": int, "default": None, "dest": "grid_size",
                                 "help": "voxels per side of the field (default: the model's)"}),
    (("--render-size",), {"type": int, "default": None, "help": "rendered view size in pixels (default: the model's)"}),
    (("--lr",), {"type": float, "default": None, "help": "learning rate (default: the model's)"}),
    (("--n-noise",), {"type": int, "default": None, "help": "noise samples per score estimate (default: the model's)"}),
    (("--sigma-schedule",), {"choices": ["random", "annealed"], "default": None,
                             "help": "noise level per step (default: the model's)"}),
    (("--emptiness-weight",), {"type": float, "default": None, "help": "emptiness loss weight (default: the model's)"}),
    (("--preview-every",), {"type": int, "default": None, "help": "steps between preview images (default: the model's)"}),
    (("--video-frames",), {"type": int, "default": None, "help": "frames of the turntable video (default: the model's)"}),
    (("--outputs",), {"nargs": "+", "default": None, "metavar": "OUTPUT",
                      "help": "any of checkpoint video mesh previews (default: all)"}),
    (("--formats", "--mesh-formats"), {"nargs": "+", "default": None, "dest": "mesh_formats", "metavar": "FORMAT",
                                       "help": "mesh files: glb obj ply stl (default: the server's)"}),
    (("--target-faces",), {"type": int, "default": None, "help": "face budget of the mesh (default: the server's)"}),
    (("--texture-size",), {"type": int, "default": None, "help": "side of the mesh texture in texels (default: the server's)"}),
)
RUN_DESTS = tuple(opts.get("dest") or flags[0][2:].replace("-", "_") for flags, opts in RUN_FLAGS)


def add_submit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``submit`` command to an ``argparse`` sub-parser set; returns the new parser.

    The parser's default ``func`` is :func:`run_submit` (``args.func(args)`` returns the exit code).
    """
    p = subparsers.add_parser(
        "submit", help="send a prompt to an SJC server (optionally wait and download the results)",
        description="Submit a text-to-3D job to an SJC API server. Job settings take the same flags as "
                    "'sjc generate'; the server fills in the ones left out.",
    )
    p.add_argument("prompt", help='the text prompt, e.g. "a red cube"')
    _add_connection_args(p)
    p.add_argument("--wait", action="store_true", help="follow progress until the job ends, then download "
                   "(default: print the queued job and return)")
    p.add_argument("--out", type=Path, default=None, help="folder for the results (default out/<job id>)")
    p.add_argument("--no-download", action="store_true", help="with --wait: print the links, download nothing (default: download)")
    for flags, opts in RUN_FLAGS:
        p.add_argument(*flags, **opts)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other job setting, e.g. --param mesh_threshold=2 (VALUE read as JSON when it "
                   "parses; default: none)")
    p.add_argument("--webhook-url", default=None, help="URL to receive signed job.started/job.completed "
                   "webhooks (default: none)")
    p.add_argument("--webhook-events", nargs="+", default=None, choices=["started", "completed"],
                   help="which webhooks to send (default: both)")
    p.add_argument("--idempotency-key", default=None, help="repeat-safe submission key (default: none)")
    p.add_argument("--cancel-on-interrupt", action="store_true", help="with --wait: Ctrl-C cancels the job "
                   "(default: the job goes on)")
    p.set_defaults(func=run_submit)
    return p


def run_submit(args: argparse.Namespace) -> int:
    """Run ``submit`` from parsed arguments; returns the exit code."""
    params: dict[str, Any] = {dest: getattr(args, dest) for dest in RUN_DESTS}
    params["outputs"] = _comma_list(params["outputs"])
    params["mesh_formats"] = _comma_list(params["mesh_formats"])
    params["webhook_url"] = args.webhook_url
    params["webhook_events"] = args.webhook_events
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


# -- the other commands: status, cancel, list, download, delete, models, usage --------------------

def _command(name: str, help_text: str, subparsers: Any, action: Any, job: bool = True) -> argparse.ArgumentParser:
    """Add a command that calls ``action(client, args)`` and prints its result (JSON unless a string)."""
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    if job:
        p.add_argument("job_id", metavar="JOB", help="the job id")
    _add_connection_args(p)

    def run(args: argparse.Namespace) -> int:
        def body() -> int:
            with SJCClient(args.server, args.api_key) as client:
                result = action(client, args)
                print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))
            return 0

        return _guard(body)

    p.set_defaults(func=run)
    return p


def _download(client: SJCClient, args: argparse.Namespace) -> str:
    out = args.out or Path("out") / args.job_id
    paths = client.download(args.job_id, out)
    return "\n".join([f"downloaded {len(paths)} files to {out.resolve()}", *(f"  {p}" for p in paths)])


def _delete(client: SJCClient, args: argparse.Namespace) -> str:
    if client.delete(args.job_id):
        return f"job {args.job_id} deleted"
    return f"job {args.job_id} canceled; it is deleted once it has stopped"


def add_client_commands(subparsers: Any) -> None:
    """Add ``submit``, ``status``, ``cancel``, ``list``, ``download``, ``delete``, ``models`` and ``usage``."""
    add_submit_parser(subparsers)
    _command("status", "print a job's record (status, stage, progress, error...)", subparsers,
             lambda c, a: c.get(a.job_id))
    _command("cancel", "cancel a job (a queued one at once, a running one at its next check)", subparsers,
             lambda c, a: c.cancel(a.job_id))
    p = _command("list", "list your jobs, newest first", subparsers,
                 lambda c, a: c.list(status=a.status, cursor=a.cursor, limit=a.limit), job=False)
    p.add_argument("--status", default=None, choices=["queued", "running", "succeeded", "failed", "canceled"],
                   help="only jobs with this status (default: all)")
    p.add_argument("--cursor", default=None, help="next_cursor of the previous page (default: the first page)")
    p.add_argument("--limit", type=int, default=20, help="jobs per page, 1-100 (default %(default)s)")
    p = _command("download", "download a job's files", subparsers, _download)
    p.add_argument("--out", type=Path, default=None, help="folder to write into (default out/<job id>)")
    _command("delete", "delete a job, its files and record (an active job is canceled first)", subparsers, _delete)
    _command("models", "list the server's models", subparsers, lambda c, a: c.models(), job=False)
    _command("usage", "your key's jobs by status, compute seconds and rate limit", subparsers,
             lambda c, a: c.usage(), job=False)


def version() -> str:
    """The installed ``sjc`` package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sjc")
    except PackageNotFoundError:
        return "unknown"


def build_parser(prog: str = "python -m sjc_client") -> argparse.ArgumentParser:
    """The parser of ``python -m sjc_client`` (the same commands as ``sjc`` offers for a server)."""
    parser = argparse.ArgumentParser(prog=prog, description="Client of the SJC jobs API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m sjc_client``."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
