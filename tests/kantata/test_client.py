"""The HTTP client against the real sandbox, and against a raw socket server for answers no API should give."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from importer.errors import ApiUnavailable, TokenRejected
from importer.kantata.client import KantataClient, OutcomeUnknown
from importer.kantata.keys import SERVICE_MODEL, SERVICE_NAME, ImportKey
from importer.sandbox.server import DEFAULT_TOKEN
from importer.settings import Secret, Settings
from tests.fake_clock import FakeClock


def _client(url: str, clock: FakeClock | None = None, **kw: Any) -> KantataClient:
    settings = Settings(base_url=url, clock=clock or FakeClock(), **{"max_attempts": 4, "backoff_base": 0.001, **kw})
    return KantataClient(settings, Secret(DEFAULT_TOKEN))


def _body(n: int, ref: str | None = None) -> dict[str, Any]:
    return {"title": f"T{n}", "amount_in_cents": n, "workspace_id": 1001,
            "external_reference": {"service_name": SERVICE_NAME, "service_model": SERVICE_MODEL,
                                   "service_model_ref": ref or f"ref-{n}"}}  # fmt: skip


def test_retry_after_is_honoured_on_429(sandbox: Any) -> None:
    sandbox.set_faults(rate_limit_every=1, retry_after=7)
    clock = FakeClock()
    client = _client(sandbox.url, clock, backoff_cap=30.0)
    with pytest.raises(ApiUnavailable, match="429"):
        client.create([_body(1)])
    assert clock.sleeps == [7.0, 7.0, 7.0]  # the server's Retry-After, not our own backoff
    assert sandbox.milestones() == []


def test_backoff_without_retry_after_is_full_jitter_and_capped() -> None:
    clock = FakeClock()
    client = _client("http://127.0.0.1:9/api/v1", clock, backoff_base=1.0, backoff_cap=4.0)
    for attempt in range(6):
        client.backoff(attempt)
    sleeps = clock.sleeps
    assert len(sleeps) == 6 and all(0 <= s <= min(4.0, 2**a) for a, s in enumerate(sleeps))
    assert len(set(sleeps)) > 1  # jitter: not one fixed delay


def test_post_is_not_retried_after_a_5xx_the_outcome_is_unknown(sandbox: Any) -> None:
    sandbox.set_faults(fail_every=1, fail_status=502)
    client = _client(sandbox.url)
    with pytest.raises(OutcomeUnknown, match="502"):
        client.create([_body(1)])
    assert sandbox.stats()["POST /billing_milestones"] == 1


@pytest.mark.parametrize(("faults", "running"), [
    ({"fail_every": 1, "fail_status": 503}, False),  # the server's own answer: it is done with the request
    ({"fail_every": 1, "fail_status": 500}, False),
    ({"fail_every": 1, "fail_status": 502}, True),  # a gateway's: the server behind it may still be at work
    ({"fail_every": 1, "fail_status": 504}, True),
    ({"drop_then_write_every": 1, "late_write_after": 0.05}, True),  # no answer at all
])  # fmt: skip
def test_an_unknown_outcome_says_whether_kantata_may_still_be_writing(
    sandbox: Any, faults: dict[str, Any], running: bool
) -> None:
    sandbox.set_faults(**faults)
    with pytest.raises(OutcomeUnknown) as caught:
        _client(sandbox.url).create([_body(1)])
    assert caught.value.running is running


def test_a_connection_refused_never_reached_kantata() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OutcomeUnknown) as caught:
        _client(f"http://127.0.0.1:{port}/api/v1").create([_body(1)])
    assert caught.value.running is False


def test_a_request_never_reaches_kantata_later_than_the_connect_timeout(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name look-up that hangs (or several addresses tried in turn) is not bounded by the socket's timeout. A
    resumed run waits connect_timeout + server_timeout after a request left for it to write; a request
    connected later than connect_timeout must not be sent at all."""
    looked_up = socket.getaddrinfo
    delay = [0.6]

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(delay[0])
        return looked_up(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)  # as urllib3 calls it
    client = _client(sandbox.url, connect_timeout=0.3)  # (short, so that the test waits little; a real bound)
    with pytest.raises(OutcomeUnknown, match="ConnectTimeout") as caught:
        client.create([_body(1)])
    assert caught.value.running is False  # never reached Kantata: safe to send again at once
    assert sandbox.stats().get("POST /billing_milestones", 0) == 0 and sandbox.milestones() == []
    delay[0] = 0.05  # slow, but within the timeout: sent as usual
    assert client.create([_body(2)]).status == 200
    assert len(sandbox.milestones()) == 1


def test_an_https_connection_is_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bound on Kantata's own scheme: its handshake (here urllib3's whole connect, made slow) counts."""
    connects: list[str] = []

    def slow_connect(self: urllib3.connection.HTTPSConnection) -> None:
        connects.append(self.host)
        time.sleep(0.6)

    monkeypatch.setattr(urllib3.connection.HTTPSConnection, "connect", slow_connect)
    with pytest.raises(OutcomeUnknown, match="ConnectTimeout") as caught:
        _client("https://kantata.invalid/api/v1", connect_timeout=0.3).create([_body(1)])
    assert caught.value.running is False and connects == ["kantata.invalid"]


def test_dropped_connection_after_write_is_an_unknown_outcome_and_lookup_finds_it(sandbox: Any) -> None:
    sandbox.set_faults(drop_after_write_every=1)
    client = _client(sandbox.url)
    with pytest.raises(OutcomeUnknown):
        client.create([_body(1), _body(2)])
    found = client.find_existing([ImportKey(SERVICE_NAME, SERVICE_MODEL, "ref-1"),
                                  ImportKey(SERVICE_NAME, SERVICE_MODEL, "ref-2"),
                                  ImportKey(SERVICE_NAME, SERVICE_MODEL, "ref-3")])  # fmt: skip
    ids = {str(m["external_reference.service_model_ref"]): str(m["id"]) for m in sandbox.milestones()}
    assert {k.ref: v for k, v in found.items()} == ids == {"ref-1": ids["ref-1"], "ref-2": ids["ref-2"]}


def test_get_is_retried_on_5xx_and_429(sandbox: Any) -> None:
    sandbox.set_faults(rate_limit_every=2, retry_after=0)
    clock = FakeClock()
    client = _client(sandbox.url, clock)
    for _ in range(3):
        client.find_existing([ImportKey(SERVICE_NAME, SERVICE_MODEL, "nothing")])
    assert client.stats.throttled >= 1 and client.stats.retries == client.stats.throttled


def test_a_create_of_100_maps_every_id_by_key_despite_newest_first_order(sandbox: Any) -> None:
    client = _client(sandbox.url)
    answer = client.create([_body(n) for n in range(100)])
    assert answer.status == 200 and answer.count == 100
    ids = {str(m["external_reference.service_model_ref"]): str(m["id"]) for m in sandbox.milestones()}
    assert {k.ref: v for k, v in answer.ids.items()} == ids
    assert len(ids) == 100


def test_find_existing_reads_every_page_and_chunks_of_200(sandbox: Any) -> None:
    client = _client(sandbox.url)
    for start in range(0, 450, 100):
        client.create([_body(n) for n in range(start, min(start + 100, 450))])
    client.create([_body(999, ref="with,comma")])
    keys = [ImportKey(SERVICE_NAME, SERVICE_MODEL, f"ref-{n}") for n in range(460)]
    keys.append(ImportKey(SERVICE_NAME, SERVICE_MODEL, "with,comma"))
    gets_before = sandbox.stats().get("GET /billing_milestones", 0)
    found = client.find_existing(keys)
    assert len(found) == 451
    assert ImportKey(SERVICE_NAME, SERVICE_MODEL, "ref-455") not in found
    assert sandbox.stats()["GET /billing_milestones"] - gets_before == 4  # 3 chunks of <=200 refs + 1 single


def test_refused_token_raises_token_rejected_with_request_id(sandbox: Any) -> None:
    settings = Settings(base_url=sandbox.url)
    client = KantataClient(settings, Secret("nope"))
    with pytest.raises(TokenRejected) as info:
        client.find_existing([ImportKey("a", "b", "c")])
    assert info.value.status == 401 and info.value.request_id
    assert "Invalid OAuth 2 Request" in str(info.value) and "nope" not in str(info.value)


@pytest.fixture
def raw_server() -> Iterator[tuple[str, list[bytes]]]:
    """Answers every request with the next canned bytes; for replies a real API should never send."""
    replies: list[bytes] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.05)  # accept() wakes up to see `stop`; closing the socket alone does not wake it
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                conn.recv(65536)
                if replies:
                    conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1", replies
    stop.set()
    thread.join(timeout=5)
    sock.close()


def _http(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body  # fmt: skip


def test_a_200_that_is_not_json_stops_the_run_rather_than_guessing(raw_server: tuple[str, list[bytes]]) -> None:
    url, replies = raw_server
    replies.append(_http("200 OK", b"<html>maintenance</html>", "text/html"))
    with pytest.raises(ApiUnavailable, match="not JSON"):
        _client(url).create([_body(1)])


def test_a_refusal_without_the_documented_body_still_carries_a_message(raw_server: tuple[str, list[bytes]]) -> None:
    url, replies = raw_server
    replies.append(_http("422 Unprocessable Entity", b"bad things", "text/plain"))
    answer = _client(url).create([_body(1)])
    assert answer.refused and answer.errors == [{"type": "system", "message": "bad things"}]


def test_an_html_error_page_is_told_in_one_line() -> None:
    import requests

    from importer.kantata.client import error_text

    response = requests.Response()
    response.status_code = 502
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>" + "<p>nginx proxy detail</p>\n" * 200
    response._content = page.encode()
    text = error_text(response)
    assert "\n" not in text and len(text) < 140
    assert text.startswith("a text/html answer, not Kantata's: \"502 Bad Gateway nginx proxy detail")
