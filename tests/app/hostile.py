"""Shared by the hostile-input tests: raw ASGI requests, body scans, side-effect snapshots."""

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import unquote

from fastapi import FastAPI

# What must never appear in a response body: tracebacks, source locations, server paths,
# library internals.
LEAK = re.compile(
    r"Traceback|File \"|site-packages|/work/|/home/|/usr/|/tmp/|\.py\b|<class |"
    r"<function |object at 0x|numpy\.|PIL\.|starlette\.|fastapi\.|pydantic_core"
)


def assert_clean(text: str) -> None:
    """The body leaks no traceback, path or library internals, and is strict JSON if JSON."""
    assert not LEAK.search(text), text
    if text.startswith(("{", "[")):
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def raw_request(
    app: FastAPI,
    method: str,
    raw_path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, bytes, int]:
    """Send one request straight to the ASGI app, as a server would pass it: the path is not
    normalised (`..` stays), only percent-decoded once. Returns (status, body, how many times
    the app asked for the request body)."""
    reads = 0
    sent: dict = {"status": 0, "body": b""}

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        if reads == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # a client that sends nothing more
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    path, _, query = raw_path.partition("?")
    header_list = [(b"host", b"127.0.0.1:8000")] + [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode(),
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    return sent["status"], sent["body"], reads


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content: a snapshot to compare before and after."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def open_fds_under(directory: Path) -> list[str]:
    """Files under `directory` this process still holds open (deleted ones included)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith(str(directory)):
            found.append(str(target))
    return found
