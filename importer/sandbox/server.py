"""A Kantata OX look-alike on loopback: the part of the API the importer uses, with fault switches.

It follows Kantata's documentation (creating billing milestones, and its API notes), not the client: same routes,
validation, error bodies and response format (``count``/``meta``/``results`` + collections keyed by id), including
the paginated answer to a create of many, and updates and deletes refused once a milestone is invoiced. This
module is the server: HTTP/1.1 on loopback, the order in which a request meets the faults, the counters tests
read, and the ``sandbox`` command. The data is in `store`, what makes a create or an update invalid in `rules`, the
other routes' answers in `routes`, the switches in `faults`.

The standard library and orjson (a dependency of the package, for encoding answers fast), so the README's first
command and every end-to-end test need nothing the install does not bring.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast
from urllib.parse import parse_qs, urlsplit

from importer.sandbox.faults import Faults, add_fault_arguments
from importer.sandbox.routes import BODY_ROUTES, ROUTES, BodyRoute, Route, created_page
from importer.sandbox.rules import Reply, check_batch, error, parse_create, proxy_page
from importer.sandbox.store import FIRST_INVOICE_ID, Inserted, NewMilestone, Store
from importer.settings import is_loopback

DEFAULT_TOKEN: Final = "sandbox-token"
# What a route is called with: the id in the path, the query (last value of each name), the body, the faults.
_Answer = Callable[[int | None, Mapping[str, str], bytes, Faults], Reply]
_ROUTE = re.compile(r"(?:/api/v1)?/(billing_milestones(?:/([0-9]{1,18}))?|workspaces|stories)/?")


def _route(method: str, path: str) -> tuple[str, int | None]:
    """The route's name for stats ("GET /billing_milestones/{id}") and the id in the path; .json is optional."""
    found = _ROUTE.fullmatch(path.removesuffix(".json"))
    if found is None:
        return f"{method} (unknown route)", None
    ident = found[2]
    name = "/billing_milestones/{id}" if ident else "/" + found[1]
    return f"{method} {name}", None if ident is None else int(ident)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Sandbox:
    """The look-alike server: SQLite data, fault switches and counters, served from a daemon thread."""

    def __init__(self, *, db: str = ":memory:", host: str = "127.0.0.1", port: int = 0, token: str = DEFAULT_TOKEN,
                 faults: Faults | None = None, invoiced: Iterable[int] = ()) -> None:  # fmt: skip
        """`invoiced`: milestone ids on invoice FIRST_INVOICE_ID from the moment they exist: those in `db` now, the
        others right after the create that makes them (its answer still shows them uninvoiced), resets included."""
        if not is_loopback(host):
            raise ValueError(f"the sandbox serves loopback only, not {host!r}: its token is no secret")
        self._store = Store(db)
        self._invoiced_once_created = sorted(set(invoiced))
        self._store.invoice(self._invoiced_once_created, FIRST_INVOICE_ID, all_or_none=False)
        self._host, self._port, self._token = host, port, token
        self._initial_token = token
        self._faults = faults or Faults()
        self._lock = threading.Lock()  # guards faults, counters and the fault phase counters
        self._stats: Counter[str] = Counter()
        self._in_flight = 0
        self._most_in_flight = 0
        self._phase: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._late: list[threading.Timer] = []  # writes of --drop-then-write-every still to come
        self._era = 0  # bumped by reset and stop: a late write promised before either is dropped
        # Per instance, so a test can hold or slow one route of one sandbox (monkeypatch.setitem).
        self._routes: dict[str, _Answer] = {name: self._on_store(route) for name, route in ROUTES.items()}
        self._routes |= {name: self._with_body(route) for name, route in BODY_ROUTES.items()}
        self._routes["POST /billing_milestones"] = self._create

    def _on_store(self, route: Route) -> _Answer:
        """`route` answering from this sandbox's data; it takes no body."""

        def answer(ident: int | None, query: Mapping[str, str], _body: bytes, faults: Faults) -> Reply:
            return route(self._store, ident, query, faults)

        return answer

    def _with_body(self, route: BodyRoute) -> _Answer:
        """`route` answering from this sandbox's data and the request's body."""

        def answer(ident: int | None, query: Mapping[str, str], body: bytes, _faults: Faults) -> Reply:
            return route(self._store, ident, query, body)

        return answer

    def start(self) -> Sandbox:
        """Listen now (port 0 picks a free port) and serve from a daemon thread."""
        if self._server is not None or self._stopped:
            raise RuntimeError("the sandbox is already running, or stopped: a stopped one cannot be restarted")
        self._server = _Server((self._host, self._port), self)
        # A short poll interval keeps stop() fast; serve_forever only polls for the shutdown flag.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kantata-sandbox", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end kept-alive connections and close the database; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.close_connections()  # or idle keep-alive threads would answer from a closed database
            self._server.server_close()
            self._thread.join()
        self._late_writes_done()
        self._store.close()

    def _late_writes_done(self) -> None:
        """Cancel the late writes promised so far (one already writing is waited for), so that none lands after
        a reset, in the next test's data, or on a closed database. A request still being served at the reset
        (sleeping its latency) promises its late write afterwards, in the new era, and writes it: as any request
        in progress then writes after the reset."""
        with self._lock:
            self._era += 1
            late, self._late = self._late, []
        for timer in late:
            timer.cancel()
            timer.join()

    def _promise_late_write(self, items: Sequence[NewMilestone], after: float) -> None:
        """Write `items` `after` seconds from now, unless a reset or stop comes first."""
        with self._lock:
            late = threading.Timer(after, self._write_late, args=(self._era, items))
            late.daemon = True
            self._late = [t for t in self._late if t.is_alive()]
            self._late.append(late)
        late.start()

    def _write_late(self, era: int, items: Sequence[NewMilestone]) -> None:
        with self._lock:  # held while writing: a reset or stop waits for this write, or this one sees their era
            if era == self._era:
                self._insert(items)

    def _insert(self, items: Sequence[NewMilestone]) -> Inserted:
        """Write a create's items, then invoice those the sandbox was told to invoice once they exist."""
        written = self._store.insert(items)
        if self._invoiced_once_created and set(written.ids) & set(self._invoiced_once_created):
            self._store.invoice(self._invoiced_once_created, FIRST_INVOICE_ID, all_or_none=False)
        return written

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/api/v1"

    def set_faults(self, **changes: object) -> None:
        """Change some switches; the every-Nth counting restarts so the next faults are predictable."""
        with self._lock:
            self._faults = replace(self._faults, **cast(dict[str, Any], changes))
            self._phase.clear()

    def set_token(self, token: str) -> None:
        """Accept another token from now on: revoking the one a client holds, mid-run."""
        with self._lock:
            self._token = token

    def reset(self) -> None:
        """Empty milestones and references (ids restart), zero the counters, switch every fault off, restore the
        token."""
        self._late_writes_done()
        self._store.clear()
        with self._lock:
            self._token = self._initial_token
            self._faults = Faults()
            self._stats.clear()
            self._phase.clear()
            self._most_in_flight = 0

    def invoice(self, milestone_ids: Iterable[int], *, invoice_id: int = FIRST_INVOICE_ID) -> None:
        """Put these milestones on an invoice, as Kantata does when one is invoiced: from then on a PUT or DELETE
        of them is refused with 422. All or none: an id not stored raises KeyError and marks nothing."""
        self._store.invoice(list(milestone_ids), invoice_id, all_or_none=True)

    def milestones(self) -> list[dict[str, object]]:
        """Every stored milestone (ids as integers), oldest first, its reference flattened as external_reference.*"""
        return self._store.dump()

    def stats(self) -> dict[str, int]:
        """Requests per route ("POST /billing_milestones") and faults injected ("429", "503", "drop_after_write",
        "drop_after_put", "drop_after_delete")."""
        with self._lock:
            return dict(self._stats)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now (a client that went away does not stop them)."""
        with self._lock:
            return self._in_flight

    @property
    def late_writes_pending(self) -> int:
        """Writes of --drop-then-write-every promised and not made yet: none left, none can still land."""
        with self._lock:
            return sum(1 for late in self._late if late.is_alive())

    @property
    def most_in_flight(self) -> int:
        """The most requests answered at once since the last reset: what a client's concurrency looked like."""
        with self._lock:
            return self._most_in_flight

    def _tick(self, *, stat: str | None = None, phase: str | None = None, every: int = 0) -> bool:
        """Count a stat and/or a phase; True when the phase has reached a multiple of ``every``."""
        with self._lock:
            if stat is not None:
                self._stats[stat] += 1
            if phase is None or not every:
                return False
            self._phase[phase] += 1
            return self._phase[phase] % every == 0

    def _respond(self, method: str, target: str, authorization: str | None, body: bytes) -> Reply:
        """Count the request as in flight while it is served (`most_in_flight`)."""
        arrived = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self._most_in_flight = max(self._most_in_flight, self._in_flight)
            faults = self._faults
        try:
            reply = self._serve_one(method, target, authorization, body)
            reply.data()  # rendering is work too: done before the answer is due
            if faults.latency and faults.latency_covers_work:
                time.sleep(max(0.0, faults.latency - (time.monotonic() - arrived)))
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve_one(self, method: str, target: str, authorization: str | None, body: bytes) -> Reply:
        """One request, in order: latency, counting, 429, auth, POST/PUT/DELETE failures, the route, then a PUT or
        DELETE that changed something may drop its answer."""
        with self._lock:
            faults = self._faults
        if faults.latency and not faults.latency_covers_work:
            time.sleep(faults.latency)
        url = urlsplit(target)
        route, ident = _route(method, url.path)
        if self._tick(stat=route, phase="request", every=faults.rate_limit_every):
            self._tick(stat="429")
            seconds = faults.retry_after
            reply = error(429, "system", "Rate limit exceeded")
            reply.headers["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
            return reply
        if authorization != f"Bearer {self._token}":
            return error(401, "oauth", "Invalid OAuth 2 Request")
        fail_every = {"POST": faults.fail_every, "PUT": faults.fail_put_every, "DELETE": faults.fail_delete_every}
        if self._tick(phase=method.lower(), every=fail_every.get(method, 0)):
            self._tick(stat=str(faults.fail_status))
            if faults.fail_html:
                return proxy_page(faults.fail_status, _phrase(faults.fail_status), authorization)
            return error(faults.fail_status, "system", f"{_phrase(faults.fail_status)} (injected by the sandbox)")
        answer = self._routes.get(route)
        if answer is None:
            return error(404, "system", f"No route matches {method} {url.path}")
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        reply = answer(ident, query, body, faults)
        drop_every = {"PUT": faults.drop_after_put_every, "DELETE": faults.drop_after_delete_every}.get(method, 0)
        if reply.status in (200, 204) and self._tick(phase=f"{method} write", every=drop_every):
            self._tick(stat=f"drop_after_{method.lower()}")
            return Reply(0, drop=True)  # changed, never answered: the client's outcome is unknown
        return reply

    def _create(self, _ident: int | None, query: Mapping[str, str], body: bytes, faults: Faults) -> Reply:
        """Validate, then meet the create's faults: refuse, drop before a late write, or write and maybe drop."""
        parsed = parse_create(body)
        if isinstance(parsed, Reply):
            return parsed
        items, is_list = parsed
        errors, valid = check_batch(items, is_list, self._store.workspaces, self._store.stories, faults,
                                    functools.partial(self._tick, stat="reject_title"))  # fmt: skip
        if errors and not faults.partial_create:
            return Reply(422, {"errors": errors})
        if valid and not errors and self._tick(phase="late", every=faults.drop_then_write_every):
            self._tick(stat="drop_then_write")
            self._promise_late_write(valid, faults.late_write_after)
            return Reply(0, drop=True)
        written = self._insert(valid) if valid else None
        if written is not None and self._tick(phase="write", every=faults.drop_after_write_every):
            self._tick(stat="drop_after_write")
            return Reply(0, drop=True)
        if errors:
            return Reply(422, {"errors": errors})
        assert written is not None  # no errors, so at least one valid item (an empty list was refused above)
        return Reply(200, created_page(written, valid, query, faults))


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, so a requests.Session reuses its connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or a small answer waits for the client's delayed ACK before it is sent
    server_version = "KantataSandbox/1.0"

    def do_GET(self) -> None:
        self._serve(self.command)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: per-request lines on stderr would drown the importer's own output."""

    def _serve(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not length.isdigit():
            self.close_connection = True  # the body's end is unknown, so the stream can't be reused
            self._send(error(400, "system", "Send the body with a Content-Length"))
            return
        body = self.rfile.read(int(length))
        app = cast(_Server, self.server).app
        try:
            reply = app._respond(method, self.path, self.headers.get("Authorization"), body)
        except Exception as exc:  # a sandbox bug should reach the client as a 500, not a hung socket
            reply = error(500, "system", f"sandbox error: {type(exc).__name__}: {exc}")
        if reply.drop:
            self.close_connection = True  # committed, never answered: the client's outcome is unknown
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = reply.data()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("x-request-id", uuid.uuid4().hex)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:  # a 204 must not carry Content-Length (RFC 9110 8.6)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so stop() can end idle keep-alive threads instead of leaving them blocked."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Sandbox) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is not a sandbox bug; anything else still prints its traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


# --- command line -------------------------------------------------------------------------------------------------


def serve(*, host: str = "127.0.0.1", port: int = 8765, db: str = ":memory:", token: str = DEFAULT_TOKEN,
          faults: Faults | None = None, invoiced: Iterable[int] = ()) -> None:  # fmt: skip
    """Run until Ctrl-C: the ``kantata-import sandbox`` command."""
    with Sandbox(db=db, host=host, port=port, token=token, faults=faults, invoiced=invoiced) as sandbox:
        print(f"sandbox: Kantata OX look-alike at {sandbox.url}, token {token!r} (Ctrl-C stops it)",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("sandbox: stopped", file=sys.stderr, flush=True)


def _loopback(host: str) -> str:
    if not is_loopback(host):
        raise argparse.ArgumentTypeError(f"{host!r} is not a loopback address; the sandbox serves this machine only")
    return host


def _milestone_ids(text: str) -> tuple[int, ...]:
    """A comma list of milestone ids, for --invoiced."""
    parts = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"[0-9]{1,18}", part) for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of milestone ids (such as 700001,700002)")
    return tuple(int(part) for part in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox command's flags: where to listen, where to keep data, which milestones are invoiced, and one
    flag per fault switch."""
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    parser.add_argument("--host", type=_loopback, default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--db", default=":memory:", help="SQLite file that keeps the data across restarts "
                        "(default: in memory)")  # fmt: skip
    parser.add_argument("--invoiced", type=_milestone_ids, default=(), metavar="IDS",
                        help="milestone ids (comma list) that are on an invoice, so PUT and DELETE refuse them "
                             "with 422 as Kantata does: those in --db at start, the others as soon as a create "
                             "makes them (ids count from 700001 in a new sandbox)")  # fmt: skip
    add_fault_arguments(parser)
