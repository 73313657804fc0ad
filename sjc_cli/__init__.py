"""The ``sjc`` command: hands each subcommand to the package that owns it.

``sjc generate`` and ``sjc sample2d`` run the engine on this machine (:mod:`sjc_engine.cli`); every
other subcommand (``submit``, ``status``, ``cancel``, ``list``, ``download``, ...) talks to a server
(:mod:`sjc_client.cli`). Each side is imported only when one of its commands runs, so ``sjc generate``
never loads the HTTP client and ``sjc submit`` never loads torch. A new client command needs nothing
here: whatever is not an engine command goes to the client's parser.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

ENGINE_COMMANDS = ("generate", "sample2d")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sjc")
    except PackageNotFoundError:
        from sjc_engine import __version__

        return __version__


def _client_commands() -> list[str]:
    import argparse

    from sjc_client.cli import add_client_commands

    sub = argparse.ArgumentParser().add_subparsers()
    add_client_commands(sub)
    return list(sub.choices)


def _usage() -> str:
    client = _client_commands()
    return (
        "usage: sjc COMMAND [options]   (sjc COMMAND --help for its options)\n\n"
        "Text to 3D by Score Jacobian Chaining.\n\n"
        f"on this machine:  {', '.join(ENGINE_COMMANDS)}\n"
        f"on a server:      {', '.join(client)}\n\n"
        "options:\n  -h, --help  this message\n  --version   the installed version\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sjc ARGV``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    first = args[0] if args else None
    if first in ENGINE_COMMANDS:
        from sjc_engine.cli import main as engine_main

        return engine_main(args)
    if first in (None, "-h", "--help"):
        print(_usage(), end="")
        return 0 if first else 2
    if first == "--version":
        print(f"sjc {_version()}")
        return 0
    from sjc_client.cli import main as client_main

    return int(client_main(args))
