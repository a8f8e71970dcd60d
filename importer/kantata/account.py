"""Which Kantata account a base URL names: one value, whatever the spelling of the URL.

The ledger of requests in flight and the one-upload-at-a-time lock (delivery/ledger.py) are kept per account. Keyed
on the URL as typed, `http://LOCALHOST:8080/api/v1/`, `http://localhost:8080/api/v1/.` and
`http://127.0.0.1:8080/api/v1` would be three accounts: two uploads under two spellings would run at once, both
find nothing, and both create the rows they share. An `Account` is parsed once from the base URL
(settings.parse_base_url checks it and writes it in one spelling) and its `key` adds what only identity needs:
every loopback name (localhost, 127.0.0.0/8, ::1) is one host, and repeated slashes are one. Treating two
spellings as one account only makes their uploads take turns; treating one account as two could send twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from importer.errors import BadBaseUrl
from importer.settings import Settings, is_loopback, parse_base_url

LOOPBACK = "localhost"  # the one name every loopback host has in a key


@dataclass(frozen=True, slots=True)
class Account:
    """`url`: the base URL requests go to, in one spelling; `key`: the account's identity (see the module)."""

    url: str
    key: str

    @classmethod
    def parse(cls, text: str, *, setting: str = "base_url") -> Account:
        """The account of base URL `text`; BadBaseUrl (exit 2) naming `setting` when it cannot be used."""
        url = parse_base_url(text, setting)
        parts = urlsplit(url)
        host = LOOPBACK if is_loopback(parts.hostname or "") else parts.netloc.rsplit(":", 1)[0]
        if parts.netloc.startswith("["):  # an IPv6 address holds colons of its own
            host = LOOPBACK if is_loopback(parts.hostname or "") else parts.netloc[: parts.netloc.index("]") + 1]
        port = f":{parts.port}" if parts.port is not None else ""
        return cls(url=url, key=f"{parts.scheme}://{host}{port}{re.sub('/+', '/', parts.path)}")

    @classmethod
    def of(cls, settings: Settings) -> Account:
        return cls.parse(settings.base_url)

    @property
    def lock_name(self) -> str:
        """A file name for this account (its lock, the note of who holds it): the same for every spelling."""
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:32]

    def __str__(self) -> str:
        return self.url


def key_of(url: str) -> str:
    """The account key of a URL read back from the state folder (a ledger line's tag, written by this version
    as a key, by an earlier one as the URL as typed): the same key for every spelling, so that an upgrade
    finds what an earlier version left in flight. A URL that cannot be parsed stays as it is."""
    try:
        return Account.parse(url).key
    except BadBaseUrl:
        return url
