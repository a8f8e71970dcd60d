"""An account's one name (importer/kantata/account.py): every spelling of one base URL is one account, and a URL
that names none is refused with the setting it came from."""

from __future__ import annotations

import pytest

from importer.errors import BadBaseUrl, ExitCode
from importer.kantata import Account, key_of

SAME = [
    ("http://localhost:8080/api/v1", "http://LOCALHOST:8080/api/v1/"),
    ("http://localhost:8080/api/v1", "http://localhost:8080/api/v1/."),
    ("http://localhost:8080/api/v1", "HTTP://localhost:8080/api/v1//"),
    ("http://localhost/api/v1", "http://localhost:80/api/v1"),
    ("https://example.com/api/v1", "https://example.com:443/api/v1"),
    ("https://example.com/api/v1", "https://Example.COM./api/v1/"),
    ("https://example.com/api/v1", "https://example.com/api/x/../v1"),
    ("https://example.com/api/v1", "https://example.com/api/%76%31"),  # unreserved characters percent-encoded
    ("https://example.com/api/v1", "https://example.com/api/./v1/%2E/"),
    ("https://example.com/api/v1", "https://example.com/api//v1"),  # a repeated slash: one account, to be safe
    ("http://localhost:8080/api/v1", "http://127.0.0.1:8080/api/v1"),
    ("http://localhost:8080/api/v1", "http://127.1.2.3:8080/api/v1"),
    ("http://localhost:8080/api/v1", "http://[::1]:8080/api/v1"),
    ("http://localhost:8080/api/v1", "http://[0:0:0:0:0:0:0:1]:8080/api/v1"),
    ("http://localhost:8080/api/v1", "http://[::ffff:127.0.0.1]:8080/api/v1"),
    ("https://xn--bcher-kva.example/api", "https://Bücher.example/api"),
    ("https://example.com/a%2Fb", "https://example.com/a%2fb"),  # hex in capitals; an encoded slash stays encoded
    ("https://example.com/a%20b", "https://example.com/a b".replace(" ", "%20")),
]
NOT_SAME = [
    ("https://example.com/api/v1", "http://localhost/api/v1"),
    ("https://example.com/api/v1", "https://example.org/api/v1"),
    ("https://example.com/api/v1", "https://example.com:8443/api/v1"),
    ("http://localhost:8080/api/v1", "http://localhost:8081/api/v1"),
    ("http://localhost/api/v1", "https://localhost/api/v1"),  # another scheme, another server
    ("https://example.com/api/v1", "https://example.com/api/v2"),
    ("https://example.com/api/v1", "https://example.com/API/v1"),  # a path's case is the server's to decide
    ("https://example.com/a%2Fb", "https://example.com/a/b"),
]


@pytest.mark.parametrize(("one", "other"), SAME)
def test_spellings_of_one_account_are_one_account(one: str, other: str) -> None:
    a, b = Account.parse(one), Account.parse(other)
    assert a.key == b.key and a.lock_name == b.lock_name
    assert Account.parse(a.url) == a  # the spelling it is written in reads back as itself


@pytest.mark.parametrize(("one", "other"), NOT_SAME)
def test_different_accounts_stay_apart(one: str, other: str) -> None:
    a, b = Account.parse(one), Account.parse(other)
    assert a.key != b.key and a.lock_name != b.lock_name


def test_requests_go_to_the_host_as_given_in_one_spelling() -> None:
    """Loopback is one account, but a request still goes where the user pointed it (a server may listen on only
    one of 127.0.0.1 and ::1)."""
    assert Account.parse("http://127.0.0.1:8080/api/v1/").url == "http://127.0.0.1:8080/api/v1"
    assert Account.parse("http://[0::1]:8080/api/v1").url == "http://[::1]:8080/api/v1"
    assert Account.parse("https://Example.COM.:443/api/./v1/").url == "https://example.com/api/v1"
    assert str(Account.parse("https://api.mavenlink.com/api/v1")) == "https://api.mavenlink.com/api/v1"


MALFORMED = [
    ("http://[x", "malformed"),
    ("http://localhost:abc/api/v1", "port is not a number from 1 to 65535"),
    ("http://localhost:70000/api/v1", "port is not a number from 1 to 65535"),
    ("http://localhost:-1/api/v1", "port is not a number from 1 to 65535"),
    ("https://example.com:0/api/v1", "port is 0"),
    ("api.mavenlink.com/api/v1", "no scheme: write https://api.mavenlink.com/api/v1"),
    ("ftp://example.com/api/v1", "scheme is 'ftp'"),
    ("file:///etc/passwd", "scheme is 'file'"),
    ("https://user:secret-pw@example.com/api/v1", "user name or password"),
    ("https://example.com/api/v1?access_token=abc", "query"),
    ("https://example.com/api/v1#top", "fragment"),
    ("http://example.com/api/v1", "plain http"),
    ("https://[not-v6]/api", "does not appear to be an IPv4 or IPv6 address"),
    ("https://exa mple.com/api", "a space"),
    ("https://example.com/a%zz", "a % not followed by two hex digits"),
    ("https://bad_host!/api", "not a valid host name"),
    ("https:///api/v1", "no host name"),
    ("", "empty"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED)
@pytest.mark.parametrize("setting", ["--base-url", "KANTATA_BASE_URL", "base_url"])
def test_a_url_that_names_no_account_is_refused_naming_the_setting(url: str, problem: str, setting: str) -> None:
    with pytest.raises(BadBaseUrl) as raised:
        Account.parse(url, setting=setting)
    message = str(raised.value)
    assert message.startswith(f"{setting} ") and problem in message and raised.value.setting == setting
    assert raised.value.exit_code == ExitCode.UNUSABLE_INPUT
    assert "secret-pw" not in message  # a password in the URL is never repeated


def test_a_ledger_tag_of_an_earlier_version_reads_as_its_account() -> None:
    """Earlier versions tagged ledger lines with the URL as typed (sanitised, no trailing slash)."""
    assert key_of("http://127.0.0.1:8765/api/v1") == Account.parse("http://LOCALHOST:8765/api/v1/").key
    assert key_of(Account.parse("https://example.com/api/v1").key) == "https://example.com/api/v1"
    assert key_of("not a url") == "not a url"  # kept as it is: compared as text, as before
