"""Serving the page: uvicorn on loopback at a free port, with a fresh secret in the launch URL."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn

from importer.settings import Settings, is_loopback
from importer.web.app import Workbench, create_app


@dataclass(frozen=True, slots=True)
class Served:
    """A page being served: the launch URL (it carries the secret), its origin, and its session."""

    url: str
    origin: str
    bench: Workbench


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _hosts(host: str, port: int) -> frozenset[str]:
    names = {host, f"[{host}]" if ":" in host else host}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost"}
    return frozenset(f"{name}:{port}" for name in names)


@contextlib.contextmanager
def started(settings: Settings, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[Served]:
    """The page served from a thread until the block ends; then a running upload is stopped as Ctrl-C would
    and the session's folder (the schedule dropped, the results) is removed."""
    port = port or _free_port(host)
    secret = secrets.token_urlsafe(24)
    app, bench = create_app(settings, secret=secret, hosts=_hosts(host, port))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kantata-import-web", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise OSError(f"cannot listen on {host}:{port}")
            time.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        origin = f"http://{shown}:{port}"
        yield Served(f"{origin}/?key={secret}", origin, bench)
    finally:
        bench.close()
        server.should_exit = True
        thread.join()


def serve(settings: Settings, *, host: str, port: int, say: Callable[[str], None], open_browser: bool) -> None:
    """Serve until Ctrl-C; print the launch URL and open it in the browser."""
    with started(settings, host=host, port=port) as served:
        say(f"the page is at {served.url}  (Ctrl-C stops it)")
        if open_browser:
            webbrowser.open(served.url)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
