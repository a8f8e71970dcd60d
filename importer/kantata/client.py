"""The one place that talks HTTP to Kantata OX: a requests.Session with bearer auth, timeouts and backoff.

Retries here are only the safe ones: any GET, and a POST answered 429 (refused before anything was written).
A POST that may have reached Kantata without an answer (timeout, dropped connection, 5xx) raises
`OutcomeUnknown`, so that the uploader looks the batch's import keys up before anything is sent again:
Kantata has no idempotency key, and a blind re-POST creates duplicates. urllib3's Retry is not used for the
same reason (it would re-POST).
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
import urllib3

from importer import __version__
from importer.clock import Clock
from importer.errors import UNRESOLVED, ApiUnavailable, TokenRejected
from importer.kantata.concurrency import Cancelled, Limiter
from importer.kantata.keys import SERVICE_MODEL, SERVICE_NAME, ImportKey
from importer.kantata.milestones import Milestone, milestones_in
from importer.logevents import REQUEST, emit
from importer.settings import Secret, Settings, sanitize_url

LOOKUP_CHUNK = 200  # external_reference_service_model_refs takes up to 200 ids, as Kantata documents; `only=` too
PER_PAGE = 200  # the documented maximum page size
PROBE_CHUNK = 100  # project ids per "does this importer have anything here?" count
_JSON_BODY = {"Content-Type": "application/json"}  # what requests sets for `json=`
_log = logging.getLogger(__name__)


class _Bounded:
    """A connection that is made within its connect timeout, name look-up and every address tried included, or
    not used: urllib3 bounds each address's try alone, and the look-up not at all. A write is waited for
    Settings.writes_until after its request left (connect_timeout + server_timeout), so a request must never
    reach Kantata later than connect_timeout after it left. Checked once connected (TLS included), before any
    byte of the request is sent: a late connection is closed, and counts as never made (ConnectTimeout)."""

    timeout: Any

    def connect(self) -> None:
        started = time.monotonic()
        super().connect()  # type: ignore[misc]  # the urllib3 connection this is mixed into
        took = time.monotonic() - started
        if isinstance(self.timeout, int | float) and took > self.timeout:
            self.close()  # type: ignore[attr-defined]
            raise urllib3.exceptions.ConnectTimeoutError(
                self, f"connecting took {took:.1f} s, over the connect timeout ({self.timeout:g} s)"
            )


class _BoundedHTTP(_Bounded, urllib3.connection.HTTPConnection):
    pass


class _BoundedHTTPS(_Bounded, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _BoundedHTTP


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _BoundedHTTPS


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, its connections bounded in time (_Bounded)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class BearerAuth(requests.auth.AuthBase):
    """Sets the header on every request; as an auth object, a ~/.netrc entry cannot replace it."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return request


class OutcomeUnknown(Exception):
    """A write may or may not have happened; look the keys up before resending.

    `running`: the request reached Kantata and nothing says it is done with it (the connection dropped or timed
    out before an answer, or a gateway answered 502/504 for it), so rows not written yet may still be written:
    the uploader keeps looking them up before it sends them again (upload.Uploader._awaited)."""

    def __init__(self, reason: str, *, running: bool = False, body: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.running = running
        self.body = body  # the answer in full, when there was one (answer_body): shown with --debug only


# A gateway in front of Kantata answers these for a request it passed on: bad gateway, gateway timeout. The
# application behind it may still be working on that request; a 500 or 503 is the server's own answer.
GATEWAY_STATUSES = (502, 504)


def _never_connected(exc: requests.RequestException) -> bool:
    """No connection could be made (refused, or connecting timed out): the request never reached Kantata."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # requests wraps urllib3's MaxRetryError
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)  # NewConnectionError is one too


def transport_error(exc: requests.RequestException) -> str:
    """What went wrong on the way, in words: "ConnectionError" alone would not say that the host name does not
    resolve, which a re-run cannot mend."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # requests wraps urllib3's MaxRetryError
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return f"{UNRESOLVED}: check --base-url"
    if (
        isinstance(exc, requests.ConnectTimeout)
        or isinstance(reason, urllib3.exceptions.ConnectTimeoutError)
        and (not isinstance(reason, urllib3.exceptions.NewConnectionError))
    ):
        return "connecting timed out"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "the connection was refused: is the address right, and the server up?"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within read_timeout"
    return type(exc).__name__


@dataclass(slots=True)
class CreateAnswer:
    """Kantata's answer to one create: the ids it reports by key, or its errors when it refused."""

    status: int
    ids: dict[ImportKey, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0

    @property
    def refused(self) -> bool:
        return self.status in (400, 422)


@dataclass(slots=True)
class ChangeAnswer:
    """Kantata's answer to a PUT or DELETE of one milestone: done (with the milestone as it now is, for a PUT),
    not found (404), or refused with its errors (400/422: invalid, or on an invoice)."""

    status: int
    milestone: Milestone | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in (200, 204)


@dataclass(slots=True)
class _Exchange:
    """What one HTTP exchange got: its status, once an answer came."""

    status: int | None = None

    def of(self, response: requests.Response) -> requests.Response:
        self.status = response.status_code
        return response


_Info = TypeVar("_Info", "WorkspaceInfo", "StoryInfo")
_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


@dataclass(slots=True)
class Stats:
    """Request counts; `count` is the only writer, so threads sending at once lose no increment."""

    posts: int = 0
    gets: int = 0
    retries: int = 0
    throttled: int = 0
    writes: int = 0  # PUTs and DELETEs
    routes: Counter[str] = field(default_factory=Counter)  # "GET /workspaces" -> requests sent, retries included
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, route: str | None = None) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            if route is not None:
                self.routes[route] += 1


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    """A project the token can see; `currency` is None when Kantata withholds it (no financial access)."""

    id: int
    title: str
    currency: str | None


@dataclass(frozen=True, slots=True)
class StoryInfo:
    """A task the token can see, with the project it belongs to (None if Kantata did not say)."""

    id: int
    title: str
    workspace_id: int | None


@dataclass(frozen=True, slots=True)
class Listing:
    """This importer's milestones in some projects (those carrying a derived key), lowest id first, and each group
    of PROBE_CHUNK projects with the count Kantata gave for it, as `import_counts` gives them.

    A count is None when Kantata gave none, or when the listing belies it: a page gave another count, or the pages
    held another number of milestones (one was created or deleted while they were read, which shifts the pages).
    Where the count is known the listing is whole: a milestone of ours that is not in it is not in those projects."""

    milestones: list[Milestone]
    counts: list[tuple[list[int], int | None]]

    @property
    def whole(self) -> frozenset[int]:
        """The projects whose count is known: for them the listing is all there is."""
        return frozenset(p for chunk, count in self.counts if count is not None for p in chunk)


def _retry_after(response: requests.Response, clock: Clock) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - clock.now())
        except (TypeError, ValueError):
            return None


def error_text(response: requests.Response) -> str:
    """Kantata's error messages joined, or a short slice of the body when it is not the documented JSON."""
    try:
        errors = response.json().get("errors")
        messages = [str(e.get("message")) for e in errors if isinstance(e, dict)]
        if messages:
            return "; ".join(messages)
    except (ValueError, AttributeError, TypeError):
        pass
    return _first_words(response)


MAX_BODY_SHOWN = 64 * 1024  # a proxy's page is a few KiB; a runaway answer is cut rather than flooding the terminal


def answer_body(response: requests.Response) -> str:
    """The answer in full, for --debug: its status, content type and text (cut at MAX_BODY_SHOWN characters)."""
    kind = response.headers.get("Content-Type") or "no content type"
    text = response.text
    cut = f"\n... ({len(text) - MAX_BODY_SHOWN:,} more characters)" if len(text) > MAX_BODY_SHOWN else ""
    return f"HTTP {response.status_code} {response.reason or ''} ({kind}):\n{text[:MAX_BODY_SHOWN]}{cut}"


def _first_words(response: requests.Response) -> str:
    """One line for an answer that is not Kantata's JSON (a proxy's HTML error page): its content type and first
    words, tags and line breaks left out, so that the stop message stays one readable line."""
    words = " ".join(re.sub(r"<[^>]*>|&[a-z]+;", " ", response.text[:4096]).split())
    if not words:
        return response.reason or f"HTTP {response.status_code}"
    if words == response.text.strip() and len(words) <= 200:  # a short plain answer says it best itself
        return words
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "an untyped"
    cut = words[:80].rsplit(" ", 1)[0] + " ..." if len(words) > 80 else words
    return f'a {kind} answer, not Kantata\'s: "{cut}"'


class KantataClient:
    def __init__(
        self,
        settings: Settings,
        token: Secret,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        if session is None:
            session = requests.Session()
            # One pooled connection per request in flight (requests' default pool keeps 10).
            adapter = _Adapter(pool_connections=1, pool_maxsize=max(10, settings.concurrency))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session
        self.limiter = Limiter(settings.concurrency, hold_grace=settings.hold_grace)
        self.cancel = threading.Event()  # set by the uploader when the run stops: no more POSTs (GETs still go)
        self.session.auth = BearerAuth(token)
        self.session.trust_env = False  # no ~/.netrc, no proxy variables surprising a finance laptop
        self.session.headers.update({"Accept": "application/json", "User-Agent": f"kantata-import/{__version__}"})
        self.stats = Stats()
        self._workspace_cache: dict[int, WorkspaceInfo | None] = {}
        self._story_cache: dict[int, StoryInfo | None] = {}
        self._clock = settings.clock
        self._timeout = (settings.connect_timeout, settings.read_timeout)

    def close(self) -> None:
        self.session.close()

    def backoff(
        self, attempt: int, response: requests.Response | None = None, *, cancel: threading.Event | None = None
    ) -> None:
        """Sleep before try `attempt + 1`: Retry-After when given, else full-jitter exponential backoff. With
        `cancel`, the wait ends early with Cancelled when that event is set (the run, or the look-up, stopped)."""
        delay = _retry_after(response, self._clock) if response is not None else None
        if delay is None:
            delay = random.uniform(0, min(self.settings.backoff_cap, self.settings.backoff_base * 2**attempt))
        self.stats.count("retries")
        delay = min(delay, self.settings.backoff_cap * 4)
        if response is not None and response.status_code == 429:
            self.limiter.hold(delay)  # Kantata limits the account: every request waits, this one goes first
        if cancel is None:
            self._clock.sleep(delay)
        elif self._clock.wait(cancel, delay):  # a sleep that a stop cuts short
            raise Cancelled

    @contextmanager
    def _logged(self, method: str, path: str, attempt: int, rows: int | None = None) -> Iterator[_Exchange]:
        """One HTTP exchange, logged as it ends, answered or not (logevents.REQUEST): never its query, which
        holds rows' keys, nor its body or headers."""
        exchange = _Exchange()
        started = self._clock.monotonic()
        failure = "interrupted"  # unless an answer or a transport error says otherwise
        try:
            yield exchange
        except requests.RequestException as exc:
            failure = transport_error(exc)
            raise
        finally:
            seconds = round(self._clock.monotonic() - started, 3)
            status = exchange.status
            trouble = status is None or status == 429 or status >= 500
            said = f"HTTP {status}" if status is not None else f"no answer ({failure})"
            counted = f" ({rows} row{'s' if rows != 1 else ''})" if rows is not None else ""
            emit(_log, logging.WARNING if trouble else logging.INFO, REQUEST,
                 f"{method} /{path}{counted}: {said} after {seconds} s, try {attempt + 1}", method=method,
                 path=f"/{path}", rows=rows, status=status, error=None if status is not None else failure,
                 seconds=seconds, retries=attempt)  # fmt: skip

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url}/{path.lstrip('/')}"

    def _raise_for_auth(self, response: requests.Response) -> None:
        if response.status_code in (401, 403):
            raise TokenRejected.from_response(
                response.status_code, error_text(response), response.headers.get("x-request-id")
            )

    def get(self, path: str, params: Mapping[str, str | int], *, stop: threading.Event | None = None) -> dict[str, Any]:
        """A GET, retried on 429, 5xx, timeouts and connection errors (reading twice is harmless). With `stop`,
        no further try (and no wait for one) once it is set: Cancelled."""
        response = self._retrying("GET", path, params=params, stop=stop, counted=("gets", f"GET /{path}"))
        if response.status_code != 200:
            hint = "; check --base-url (e.g. https://api.mavenlink.com/api/v1)" if response.status_code == 404 else ""
            raise ApiUnavailable(
                f"Kantata answered GET {path} with HTTP {response.status_code}: {error_text(response)}{hint}",
                status=response.status_code,
                body=answer_body(response),
            )
        return _json(response)

    def _retrying(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        payload: bytes | None = None,
        stop: threading.Event | None = None,
        counted: tuple[str, str],
        unknown_raises: bool = False,
        tried: int = 0,
    ) -> requests.Response:
        """One request that is safe to repeat (a read, or a write whose repeat changes nothing), tried until it
        gets an answer that is not 429 or 5xx, or `max_attempts` tries are spent. Auth refusals raise
        TokenRejected at once; with `stop`, no further try (and no wait for one) once it is set: Cancelled.
        `unknown_raises`: a try that may have been carried out without its answer coming (a 5xx, or no answer
        after the request went out) raises OutcomeUnknown instead of being tried again, for the caller to look
        before it repeats; `tried`: the tries the caller made already (it counts towards `max_attempts`)."""
        last = body = ""
        for attempt in range(tried, self.settings.max_attempts):
            if stop is not None and stop.is_set():
                raise Cancelled
            try:
                self.stats.count(*counted)
                # (a stop also ends a wait for room, or for another request's 429 to pass: nothing is sent)
                with (
                    self.limiter.slot(stop.is_set if stop is not None else None) as generation,
                    self._logged(method, path, attempt, 1 if method in ("PUT", "DELETE") else None) as exchange,
                ):
                    response = exchange.of(self.session.request(method, self._url(path), params=params, data=payload,
                                                                headers=_JSON_BODY if payload is not None else None,
                                                                timeout=self._timeout))  # fmt: skip
            except requests.RequestException as exc:
                if unknown_raises and not _never_connected(exc):
                    raise OutcomeUnknown(f"no answer ({type(exc).__name__})", running=True) from exc
                last, body = transport_error(exc), ""
                if attempt + 1 < self.settings.max_attempts:
                    self.backoff(attempt, cancel=stop)
                continue
            self._raise_for_auth(response)
            if unknown_raises and response.status_code >= 500:
                self.limiter.throttled(generation)
                raise OutcomeUnknown(f"HTTP {response.status_code}: {error_text(response)}",
                                     running=response.status_code in GATEWAY_STATUSES,
                                     body=answer_body(response))  # fmt: skip
            if response.status_code == 429 or response.status_code >= 500:
                self.limiter.throttled(generation)  # 429, or a server in distress: fewer requests at once
                if response.status_code == 429:
                    self.stats.count("throttled")
                last, body = f"HTTP {response.status_code}: {error_text(response)}", answer_body(response)
                if attempt + 1 < self.settings.max_attempts:
                    self.backoff(attempt, response, cancel=stop)
                continue
            self.limiter.succeeded()
            return response
        raise ApiUnavailable(
            f"Kantata at {sanitize_url(self.settings.base_url)} did not answer {method} {path} after "
            f"{self.settings.max_attempts} tries (last: {last})",
            attempts=self.settings.max_attempts,
            body=body,
        )

    def create(self, bodies: Sequence[dict[str, Any]], *, on_send: Callable[[], None] | None = None) -> CreateAnswer:
        """POST one batch. Retries 429 only; raises OutcomeUnknown when the write may have happened.

        `on_send` runs just before each POST goes out, once a slot is held: what it records (the journal's
        "sending") is then true of every request sent, and of no request that a stop cancelled before it left."""
        params: dict[str, str | int] = {"per_page": PER_PAGE, "include": "external_references"}
        # Encoded once, before a slot is taken: as `json=` would (requests' own dumps, allow_nan=False), but not
        # inside the slot while other batches wait for it, and not again for a retry after 429.
        payload = json.dumps({"billing_milestones": list(bodies)}, allow_nan=False).encode()
        for attempt in range(self.settings.max_attempts):
            if self.cancel.is_set():
                raise Cancelled  # a try before this one, if any, was answered 429: nothing was written
            try:
                with self.limiter.slot(self.cancel.is_set) as generation:
                    if on_send is not None:
                        on_send()
                    self.stats.count("posts", "POST /billing_milestones")
                    with self._logged("POST", "billing_milestones", attempt, len(bodies)) as exchange:
                        response = exchange.of(self.session.post(self._url("billing_milestones"), params=params,
                                                                 data=payload, headers=_JSON_BODY,
                                                                 timeout=self._timeout))  # fmt: skip
            except requests.RequestException as exc:
                raise OutcomeUnknown(f"no answer ({type(exc).__name__})", running=not _never_connected(exc)) from exc
            self._raise_for_auth(response)
            if response.status_code == 429:
                self.stats.count("throttled")
                self.limiter.throttled(generation)
                if attempt + 1 < self.settings.max_attempts:
                    self.backoff(attempt, response, cancel=self.cancel)
                continue
            if response.status_code >= 500:
                self.limiter.throttled(generation)  # a server in distress gets fewer requests at once, too
                raise OutcomeUnknown(f"HTTP {response.status_code}: {error_text(response)}",
                                     running=response.status_code in GATEWAY_STATUSES,
                                     body=answer_body(response))  # fmt: skip
            if response.status_code in (400, 422):
                return CreateAnswer(response.status_code, errors=_errors(response))
            if response.status_code != 200:
                raise ApiUnavailable(
                    f"Kantata answered POST billing_milestones with HTTP {response.status_code}: "
                    f"{error_text(response)}",
                    status=response.status_code,
                    body=answer_body(response),
                )
            self.limiter.succeeded()
            data = _json(response)
            return CreateAnswer(200, ids=milestone_keys(data), count=int(data.get("count") or 0))
        raise ApiUnavailable(
            f"Kantata kept answering 429 (too many requests) after {self.settings.max_attempts} tries",
            attempts=self.settings.max_attempts,
            status=429,
        )

    def find_existing(self, keys: Iterable[ImportKey]) -> dict[ImportKey, str]:
        """Which of these import keys already have a milestone (the lowest id when two do)."""
        return {key: held[0].id for key, held in self.find_milestones(keys).items()}

    def find_milestones(
        self, keys: Iterable[ImportKey], *, stop: threading.Event | None = None
    ) -> dict[ImportKey, list[Milestone]]:
        """Every milestone holding each of these import keys, lowest id first (two mean a duplicate), 200 refs
        per look-up, each key's milestones from one page (`_whole_pages`). With `stop`, no further request once
        it is set: Cancelled."""
        wanted = set(keys)
        by_service: dict[tuple[str, str], list[str]] = {}
        for key in sorted(wanted):
            by_service.setdefault((key.service_name, key.service_model), []).append(key.ref)
        every_query: list[dict[str, str | int]] = []
        for (service, model), refs in by_service.items():
            listable = [r for r in refs if "," not in r]  # a comma would split the list filter
            queries: list[dict[str, str | int]] = [
                {"external_reference_service_model_refs": ",".join(listable[i : i + LOOKUP_CHUNK])}
                for i in range(0, len(listable), LOOKUP_CHUNK)
            ]
            queries += [{"external_reference_service_model_ref": r} for r in refs if "," in r]
            base = {"external_reference_service_name": service, "external_reference_service_model": model}
            every_query.extend({**base, **query} for query in queries)
        found: dict[ImportKey, dict[str, Milestone]] = {}
        for page in self._whole_pages(every_query, stop):
            for milestone in page:
                for key in milestone.keys:
                    if key in wanted:  # filters can be ignored by the server: trust only exact matches
                        found.setdefault(key, {})[milestone.id] = milestone
        return {key: sorted(held.values(), key=lambda m: m.sort_id) for key, held in found.items()}

    def import_counts(self, workspace_ids: Sequence[int]) -> list[tuple[list[int], int | None]]:
        """How many milestones with this importer's derived keys Kantata counts in each group of PROBE_CHUNK
        projects (one request a group); None where it gives no count, or gives one its own listing belies."""
        counted: list[tuple[list[int], int | None]] = []
        for start in range(0, len(workspace_ids), PROBE_CHUNK):
            chunk = list(workspace_ids[start : start + PROBE_CHUNK])
            data = self.get("billing_milestones", {
                "workspace_ids": ",".join(map(str, chunk)), "external_reference_service_name": SERVICE_NAME,
                "external_reference_service_model": SERVICE_MODEL, "per_page": 1,
            })  # fmt: skip
            count = _count(data)
            if count is None or count < 0 or (count == 0) == bool(data.get("results")):
                count = None
            counted.append((chunk, count))
        return counted

    def imported_total(self, workspace_ids: Sequence[int]) -> int | None:
        """`import_counts` summed (`counted_total`)."""
        return counted_total(self.import_counts(workspace_ids))

    def list_imported(self, workspace_ids: Sequence[int]) -> Listing:
        """Every milestone with this importer's derived keys in these projects (see `Listing`): one listing per
        PROBE_CHUNK projects, oldest first. The first page of each tells how many pages follow; those are then
        read several at a time, as the look-ups are."""
        chunks = [
            list(workspace_ids[start : start + PROBE_CHUNK]) for start in range(0, len(workspace_ids), PROBE_CHUNK)
        ]
        # Oldest first: a milestone created while the pages are read then lands on a page after the ones already
        # read, instead of pushing a milestone that was there all along off the last page.
        queries: list[dict[str, str | int]] = [{
            "workspace_ids": ",".join(map(str, chunk)), "external_reference_service_name": SERVICE_NAME,
            "external_reference_service_model": SERVICE_MODEL, "order": "created_at:asc",
            "include": "external_references", "per_page": PER_PAGE,
        } for chunk in chunks]  # fmt: skip

        def page(asked: tuple[int, int], stop: threading.Event | None) -> dict[str, Any]:
            return self.get("billing_milestones", {**queries[asked[0]], "page": asked[1]}, stop=stop)

        pages = [[first] for first in self._map(page, [(n, 1) for n in range(len(queries))])]
        rest = [(n, number) for n, [first] in enumerate(pages) for number in range(2, _page_count(first) + 1)]
        for (n, _), data in zip(rest, self._map(page, rest), strict=True):
            pages[n].append(data)
        found: dict[str, Milestone] = {}
        counts: list[tuple[list[int], int | None]] = []
        for chunk, answers in zip(chunks, pages, strict=True):
            listed = {m.id: m for data in answers for m in milestones_in(data)}
            asked = set(chunk)  # filters can be ignored by the server: trust only what matches them
            found.update(
                (m.id, m) for m in listed.values() if m.workspace_id in asked and any(k.derived for k in m.keys)
            )
            counts.append((chunk, _listed_count(answers, len(listed))))
        return Listing(sorted(found.values(), key=lambda m: m.sort_id), counts)

    def _map(
        self,
        work: Callable[[_Arg, threading.Event | None], _Result],
        args: Sequence[_Arg],
        stop: threading.Event | None = None,
    ) -> list[_Result]:
        """`work` for each of `args`, several at once when there are many (each request still takes a slot of
        the limiter), in the order of `args`. `stop`: no further request once it is set. Without one, an error
        or a Ctrl-C ends the work (an event of its own); with one, it is the caller's to set (the uploader sets
        it when a request stops the run), since setting it here would stop the caller's other work too."""
        if len(args) <= 1 or self.settings.concurrency == 1:
            return [work(arg, stop) for arg in args]
        pool = ThreadPoolExecutor(min(len(args), self.settings.concurrency), thread_name_prefix="kantata-lookup")
        ended = threading.Event() if stop is None else stop

        def each(arg: _Arg) -> _Result:
            if ended.is_set():
                raise Cancelled
            return work(arg, ended)

        try:
            return list(pool.map(each, args))
        finally:  # on an error or Ctrl-C: work not started is not begun, running work stops after this request
            if stop is None:
                ended.set()
            self.limiter.wake()  # those waiting for a slot see the stop
            pool.shutdown(wait=True, cancel_futures=True)

    def _whole_pages(
        self, queries: list[dict[str, str | int]], stop: threading.Event | None = None
    ) -> list[list[Milestone]]:
        """The milestones of these look-ups by key, each key's from one answer. Pages are cut by offset: a
        milestone deleted after page 1 was read moves page 2's first one onto page 1, and neither read sees it.
        Another upload deletes its copies while this one looks its keys up (delivery/converge.py), so a key whose
        copies were read page by page could show one milestone where it holds two. A look-up that needs more
        than one page is asked again with its refs split until each answer is whole; a single ref's copies
        filling more than a page are read page by page, as nothing can split them."""
        pending: list[tuple[dict[str, str | int], int | None]] = [(query, None) for query in queries]
        whole: list[list[Milestone]] = []

        def first(asked: tuple[dict[str, str | int], int | None], stop: threading.Event | None) -> dict[str, Any]:
            params = {**asked[0], "include": "external_references", "per_page": PER_PAGE, "page": 1}
            return self.get("billing_milestones", params, stop=stop)

        while pending:
            firsts = self._map(first, pending, stop)
            again: list[tuple[dict[str, str | int], int | None]] = []
            for (query, before), data in zip(pending, firsts, strict=True):
                refs = str(query.get("external_reference_service_model_refs", "")).split(",")
                count = _count(data)
                if _page_count(data) == 1:
                    whole.append(list(milestones_in(data)))
                elif len(refs) > 1 and count is not None and (before is None or count < before):
                    parts = min(len(refs), _page_count(data) + 1)  # one more than needed: copies may still come
                    size = -(-len(refs) // parts)
                    again += [({**query, "external_reference_service_model_refs": ",".join(refs[i : i + size])}, count)
                              for i in range(0, len(refs), size)]  # fmt: skip
                else:  # one ref, or a server that does not narrow the answer by refs: splitting would not help
                    whole.extend(self._each([query], stop))
            pending = again
        return whole

    def _each(self, queries: list[dict[str, str | int]], stop: threading.Event | None = None) -> list[list[Milestone]]:
        """Every page of every query; several queries in flight at once when there are many."""
        return self._map(lambda q, ended: list(self._pages("billing_milestones", q, ended)), queries, stop)

    def _pages(
        self, path: str, params: dict[str, str | int], stop: threading.Event | None = None
    ) -> Iterable[Milestone]:
        for data in self._each_page(path, {**params, "include": "external_references"}, stop):
            yield from milestones_in(data)

    def _each_page(
        self, path: str, params: Mapping[str, str | int], stop: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every page of a listing, PER_PAGE at a time, until the page count Kantata gives is reached."""
        page = 1
        while True:
            data = self.get(path, {**params, "per_page": PER_PAGE, "page": page}, stop=stop)
            yield data
            meta = data.get("meta") or {}
            if page >= int(meta.get("page_count") or 1):
                return
            page += 1

    def workspaces(self, ids: Iterable[int], *, stop: threading.Event | None = None) -> dict[int, WorkspaceInfo]:
        """The projects among `ids` that the token can see (a miss is simply absent), `only=` 200 ids a request.

        Cached for the client's life: GET /workspaces has a rate limit of its own, and a schedule names the same
        few projects on many rows."""
        return self._lookup("workspaces", ids, {}, self._workspace_cache, _workspace, stop)

    def stories(self, ids: Iterable[int]) -> dict[int, StoryInfo]:
        """The tasks among `ids` that the token can see, each with its project (`include=workspace`), cached."""
        return self._lookup("stories", ids, {"include": "workspace"}, self._story_cache, _story)

    def all_workspaces(self) -> list[WorkspaceInfo]:
        """Every project the token can see, in Kantata's order (for the template's lookup sheet)."""
        found = [_workspace(obj) for data in self._each_page("workspaces", {}) for obj in _primary(data, "workspaces")]
        return [w for w in found if w is not None]

    def all_stories(self, workspace_ids: Sequence[int]) -> list[StoryInfo]:
        """Every task the token can see in these projects (`workspace_ids=` 200 a request), for the template's
        Tasks sheet: an upon_completion row needs one, and nothing else lists them."""
        found: list[StoryInfo] = []
        for start in range(0, len(workspace_ids), LOOKUP_CHUNK):
            chunk = ",".join(map(str, workspace_ids[start : start + LOOKUP_CHUNK]))
            params = {"workspace_ids": chunk, "include": "workspace"}
            found += [s for data in self._each_page("stories", params) for obj in _primary(data, "stories")
                      if (s := _story(obj)) is not None]  # fmt: skip
        return found

    def _lookup(
        self,
        path: str,
        ids: Iterable[int],
        extra: Mapping[str, str],
        cache: dict[int, _Info | None],
        make: Callable[[Mapping[str, Any]], _Info | None],
        stop: threading.Event | None = None,
    ) -> dict[int, _Info]:
        wanted = sorted(set(ids))
        unknown = [i for i in wanted if i not in cache]
        for start in range(0, len(unknown), LOOKUP_CHUNK):
            chunk = unknown[start : start + LOOKUP_CHUNK]
            found: dict[int, _Info] = {}
            for data in self._each_page(path, {**extra, "only": ",".join(map(str, chunk))}, stop):
                for obj in _primary(data, path):
                    info = make(obj)
                    if info is not None:
                        found[info.id] = info
            # Only what was asked (a filter the server ignored must not add rows); a miss is cached too.
            cache.update({i: found.get(i) for i in chunk})
        return {i: info for i in wanted if (info := cache[i]) is not None}

    # --- the living schedule: milestones by id and by key, changed in place, removed ---

    def milestones(self, ids: Iterable[str]) -> dict[str, Milestone]:
        """The milestones among `ids` that exist (a miss is simply absent), `only=` 200 ids a request, several
        requests in flight as for the key look-ups."""
        wanted = sorted(set(ids), key=lambda i: (len(i), i))
        chunks = [wanted[start : start + LOOKUP_CHUNK] for start in range(0, len(wanted), LOOKUP_CHUNK)]
        found: dict[str, Milestone] = {}
        for chunk, page in zip(chunks, self._each([{"only": ",".join(chunk)} for chunk in chunks]), strict=True):
            asked = set(chunk)  # a filter can be ignored by the server: trust only the ids asked for
            found.update((m.id, m) for m in page if m.id in asked)
        return found

    def milestone(self, milestone_id: str, *, stop: threading.Event | None = None) -> Milestone | None:
        """One milestone as Kantata holds it; None when there is none by that id. With `stop`: Cancelled once set."""
        data = self.get("billing_milestones", {"only": milestone_id, "include": "external_references"}, stop=stop)
        return next((m for m in milestones_in(data) if m.id == milestone_id), None)

    def change(
        self, milestone_id: str, fields: Mapping[str, Any], *, stop: threading.Event | None = None, tried: int = 0
    ) -> ChangeAnswer:
        """PUT the fields of one milestone: tried again after 429, and after a try that never reached Kantata;
        an answer that may have been lost after the change was made raises OutcomeUnknown, for the caller to
        look the milestone up before it sends the change again (delivery/updates.py); `tried`: its tries so far."""
        payload = json.dumps({"billing_milestone": dict(fields)}, allow_nan=False).encode()
        return self._write("PUT", milestone_id, payload, stop, unknown_raises=True, tried=tried)

    def remove(self, milestone_id: str, *, stop: threading.Event | None = None) -> ChangeAnswer:
        """DELETE one milestone; one already gone answers 404, which the caller reads as done."""
        return self._write("DELETE", milestone_id, None, stop)

    def _write(
        self,
        method: str,
        milestone_id: str,
        payload: bytes | None,
        stop: threading.Event | None,
        *,
        unknown_raises: bool = False,
        tried: int = 0,
    ) -> ChangeAnswer:
        path = f"billing_milestones/{milestone_id}"
        params: dict[str, str | int] | None = {"include": "external_references"} if payload is not None else None
        response = self._retrying(method, path, params=params, payload=payload, stop=stop,
                                  counted=("writes", f"{method} /billing_milestones/{{id}}"),
                                  unknown_raises=unknown_raises, tried=tried)  # fmt: skip
        if response.status_code in (400, 404, 422):
            return ChangeAnswer(response.status_code, errors=_errors(response))
        if response.status_code not in (200, 204):
            raise ApiUnavailable(f"Kantata answered {method} {path} with HTTP {response.status_code}: "
                                 f"{error_text(response)}", status=response.status_code,
                                 body=answer_body(response))  # fmt: skip
        found = list(milestones_in(_json(response))) if response.status_code == 200 and response.content else []
        return ChangeAnswer(response.status_code, milestone=found[0] if found else None)


def _page_count(data: Mapping[str, Any]) -> int:
    """How many pages a listing has, as its page says (one when it does not say)."""
    pages = (data.get("meta") or {}).get("page_count")
    return pages if isinstance(pages, int) and not isinstance(pages, bool) and pages > 0 else 1


def _count(data: Mapping[str, Any]) -> int | None:
    """The count a listing's page gives, if it gives one."""
    count = data.get("count", (data.get("meta") or {}).get("count"))
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _listed_count(pages: Sequence[Mapping[str, Any]], listed: int) -> int | None:
    """The count the first page of a listing gave, if every page gave the same and `listed` (the milestones its
    pages held) is that many; else None."""
    counts = {_count(data) for data in pages}
    count = counts.pop() if len(counts) == 1 else None
    return count if count == listed else None


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise ApiUnavailable(
            f"Kantata answered with something that is not JSON: HTTP {response.status_code}, "
            f"{_first_words(response)} (x-request-id {response.headers.get('x-request-id', 'none')})",
            status=response.status_code,
            body=answer_body(response),
        ) from None
    if not isinstance(data, dict):
        raise ApiUnavailable("Kantata answered with JSON that is not an object", status=response.status_code)
    return data


def _primary(data: Mapping[str, Any], key: str) -> Iterator[Mapping[str, Any]]:
    """The primary objects of an answer, in `results` order (a top-level collection may hold side-loads too)."""
    objects = data.get(key) or {}
    for entry in data.get("results") or []:
        if isinstance(entry, dict) and entry.get("key") == key:
            obj = objects.get(str(entry.get("id")))
            if isinstance(obj, dict):
                yield obj


def _int(value: object) -> int | None:
    """An id as Kantata sends it (a string of digits), or None for anything else."""
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None


def _workspace(obj: Mapping[str, Any]) -> WorkspaceInfo | None:
    ident = _int(obj.get("id"))
    if ident is None:
        return None
    currency = obj.get("currency")
    return WorkspaceInfo(ident, str(obj.get("title") or ""), str(currency).upper() if currency else None)


def _story(obj: Mapping[str, Any]) -> StoryInfo | None:
    ident = _int(obj.get("id"))
    if ident is None:
        return None
    return StoryInfo(ident, str(obj.get("title") or ""), _int(obj.get("workspace_id")))


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list) and errors:
        return [e if isinstance(e, dict) else {"message": str(e)} for e in errors]
    return [{"type": "system", "message": error_text(response)}]


def milestone_keys(data: Mapping[str, Any]) -> dict[ImportKey, str]:
    """Milestone id by import key, read through `results` and the side-loaded external references."""
    milestones = data.get("billing_milestones") or {}
    references = data.get("external_references") or {}
    keys: dict[ImportKey, str] = {}
    for entry in data.get("results") or []:
        if entry.get("key") != "billing_milestones":
            continue
        milestone = milestones.get(str(entry.get("id"))) or {}
        for ref_id in milestone.get("external_reference_ids") or []:
            ref = references.get(str(ref_id)) or {}
            if ref.get("service_name") and ref.get("service_model_ref") is not None:
                key = ImportKey(str(ref["service_name"]), str(ref.get("service_model")), str(ref["service_model_ref"]))
                keys.setdefault(key, str(entry["id"]))
    return keys


def counted_total(counts: Sequence[tuple[list[int], int | None]]) -> int | None:
    """The sum of `import_counts`; None when any group's count is unknown."""
    if any(count is None for _, count in counts):
        return None
    return sum(count or 0 for _, count in counts)
