"""A small Python client and command line for the SJC jobs API.

    >>> from sjc_client import SJCClient
    >>> client = SJCClient("http://127.0.0.1:8000", api_key="...")
    >>> job = client.submit("a red cube", steps=2000)
    >>> record = client.wait(job["id"])          # follows the SSE event stream
    >>> files = client.download(job["id"], "out/red-cube")

The package imports httpx (and tqdm for the CLI) but no torch, so it installs anywhere.
"""

from sjc_client.client import SJCClient
from sjc_client.errors import ApiError, JobFailed, SJCClientError
from sjc_client.sse import SSEEvent, parse_sse

__all__ = ["ApiError", "JobFailed", "SJCClient", "SJCClientError", "SSEEvent", "parse_sse"]
