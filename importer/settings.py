"""One typed settings object that both the CLI and Python callers build, once, and pass down.

A flag beats its environment variable, which beats the config file (`importer.cli.config`), which beats the
defaults. Only the edge constructors (`Settings.from_env`, `Settings.from_argparse`) read the environment, and only
from the mapping they are given; the library below them reads none. The token comes only from the environment or a
hidden prompt, never a flag (flags land in shell history and `ps`) or a file.
"""

from __future__ import annotations

import codecs
import contextlib
import getpass
import ipaddress
import os
import stat
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from importer.clock import SYSTEM_CLOCK, Clock
from importer.errors import BadBaseUrl, BadToken, ConfigError, MissingToken

DEFAULT_BASE_URL = "https://api.mavenlink.com/api/v1"
TOKEN_ENV = "KANTATA_API_TOKEN"
TOKEN_FILE_ENV = "KANTATA_API_TOKEN_FILE"  # a file holding the token (a mounted secret)
TOKEN_FILE_MAX = 64 * 1024  # bytes read at most from a token file: a token is far shorter than this
LOG_FORMATS = ("text", "json")
BASE_URL_ENV = "KANTATA_BASE_URL"
STATE_ENV = "KANTATA_IMPORT_STATE"  # the folder of the ledger and the per-account upload locks
NO_STREAM_ENV = "KANTATA_IMPORT_NO_STREAM"  # 1: an upload writes its results workbook after the last answer
NO_PREFETCH_ENV = "KANTATA_IMPORT_NO_PREFETCH"  # 1: the CLI does not read the workbook ahead of the imports
MAX_BATCH = 100  # the endpoint's documented limit per request
MAX_LOCK_WAIT = 7 * 24 * 3600.0  # seconds: --wait beyond a week is a typo
APP_NAME = "kantata-import"  # the state folder's name under the platform's


DEFAULT_CONCURRENCY = 4  # "a few requests in flight" (Kantata's rate-limit guidance)
MAX_CONCURRENCY = 16


class Secret:
    """Holds the token so that no repr, str, log line or traceback can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


REDACTED_FROM = 6  # characters: a shorter "token" (a test's "x") is no secret, and would star out every x


def redact(text: str, *secrets: Secret | None) -> str:
    """`text` with each of `secrets` replaced by ***: for messages built from an exception that may quote one (a
    library refusing a header value, say). The caller names the tokens it holds; None stands for no token."""
    for secret in secrets:
        if secret is not None and len(value := secret.reveal()) >= REDACTED_FROM:
            text = text.replace(value, "***")
    return text


def token(text: str, where: str) -> Secret | None:
    """The token as given in `where`, without the spaces or line break around it (a token copied from a file
    or a web page often ends with one); None if nothing is left. Any other character than printable ASCII left
    inside is refused: it cannot be a Kantata token, and an HTTP library would quote it in its error."""
    value = text.strip()
    if not value:
        return None
    if not all("!" <= c <= "~" for c in value):
        kinds = [what for what, found in (("a line break", any(c in "\r\n" for c in value)),
                                          ("a space or tab", any(c in " \t" for c in value)),
                                          ("a character outside ASCII", any(ord(c) > 126 for c in value)),
                                          ("a control character", any(ord(c) < 32 and c not in "\r\n\t"
                                                                      for c in value))) if found]  # fmt: skip
        raise BadToken(f"the API token in {where} has {' and '.join(kinds) or 'a character it cannot have'} inside "
                       "it, so it cannot be a Kantata token: copy it again (it is not shown here)")  # fmt: skip
    return Secret(value)


def token_from_file(path: Path, where: str) -> Secret:
    """The token held in the file `path` (`where` names how it was given), without one trailing line break.

    Like ssh with a private key, a file that group or others may read or write is refused: the token would be
    as good as shared. The mode is read from the opened file, so a file swapped after the check is not read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(f"the token file {path} ({where}) does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path} ({where}): {exc.strerror or exc}") from None
    try:
        _check_private(path, where, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        data = file.read(TOKEN_FILE_MAX + 1)
    if len(data) > TOKEN_FILE_MAX:
        raise ConfigError(f"the token file {path} ({where}) is larger than {TOKEN_FILE_MAX} bytes, so it cannot "
                          "hold just a token; name the file that does")  # fmt: skip
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadToken(f"the token file {path} ({where}) is not text, so it cannot hold a Kantata token "
                       "(it is not shown here)") from None  # fmt: skip
    text = text.removesuffix("\n").removesuffix("\r")  # the line break an editor or `echo` adds
    found = token(text, f"the token file {path}")
    if found is None:
        raise MissingToken(f"the token file {path} ({where}) is empty: put the Kantata OX API token in it")
    return found


def _check_private(path: Path, where: str, info: os.stat_result) -> None:
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode)):  # a pipe: --token-file <(pass show ...)
        raise ConfigError(f"the token file {path} ({where}) is not a regular file; name the file itself")
    # On Windows st_mode shows only the read-only flag, never who else may read the file (that is in the file's
    # ACL), so there is no mode to check there.
    if os.name != "nt" and info.st_mode & 0o077:
        raise ConfigError(
            f"the token file {path} ({where}) can be read or written by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): the token must be private to you. Run: chmod 600 {path}"
        )


def is_loopback(host: str) -> bool:
    """Plain http is tolerated only here: the sandbox, never a real network."""
    host = host.casefold().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
PATH_SAFE = UNRESERVED | frozenset("!$&'()*+,;=:@/")  # what a path may hold as it is (RFC 3986)
HOST_SAFE = frozenset(string.ascii_lowercase + string.digits + "-._")
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_base_url(text: str, setting: str = "base_url") -> str:
    """The base URL in one spelling, or BadBaseUrl naming `setting` and what to mend.

    Spellings that reach the same server are written the same: scheme and host in lower case, a host outside
    ASCII in IDNA (as requests sends it), no dot after the host, no explicit default port, percent-encoding
    normalised (hex in capitals, unreserved characters plain), dot segments and trailing slashes removed.
    Refused: no scheme or another than http(s); plain http beyond loopback; a user:password@ (the token is the
    credential); a query or fragment; a port that is no number from 1 to 65535; a host that is no host."""

    def bad(problem: str) -> BadBaseUrl:
        return BadBaseUrl.from_problem(text, problem, setting=setting)

    raw = text.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise bad("it has a space, a line break or a control character inside")
    if "://" not in raw:
        raise bad(f"it has no scheme: write https://{raw.removeprefix('//')}" if raw else "it is empty")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:  # an unclosed [, a port that is no number or out of range
        what = str(exc)
        if "port" in what.casefold():
            raise bad("its port is not a number from 1 to 65535") from None
        raise bad(f"it is malformed ({what})") from None
    scheme = parts.scheme.casefold()
    if scheme not in DEFAULT_PORTS:
        raise bad(f"its scheme is {parts.scheme!r}; use https (or http to loopback, for the sandbox)")
    if "@" in parts.netloc:
        raise bad(f"it carries a user name or password; remove it, the token goes in {TOKEN_ENV}")
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise bad("it has a query (?...) or fragment (#...); give the API's address only")
    if port == 0:
        raise bad("its port is 0; use a port from 1 to 65535")
    host = _host(parts.netloc, bad)
    if scheme == "http" and not is_loopback(host):
        raise bad("it is plain http, so the token would cross the network unencrypted; use https (plain http "
                  "is allowed only to loopback, for the sandbox)")  # fmt: skip
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{_path(parts.path, bad)}"


def _host(netloc: str, bad: Callable[[str], BadBaseUrl]) -> str:
    """The host of `netloc` (no port, no user) in one spelling: IPv6 compressed in brackets, names in lower case
    and IDNA, without a trailing dot."""
    given = netloc.rpartition("@")[2]
    if given.startswith("["):
        inside = given[1 : given.find("]")] if "]" in given else given[1:]
        try:
            return f"[{ipaddress.IPv6Address(inside).compressed}]"
        except ValueError:
            raise bad(f"[{inside}] is not an IPv6 address") from None
    name = given.rsplit(":", 1)[0] if ":" in given else given
    name = name.rstrip(".") if not name.endswith("..") else name
    if not name:
        raise bad("it has no host name")
    if not name.isascii():
        import idna  # requests' own dependency; loaded only for a host outside ASCII

        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise bad(f"its host {name!r} is not a valid host name ({exc})") from None
    name = name.casefold()
    if not set(name) <= HOST_SAFE or "" in name.split("."):
        raise bad(f"its host {name!r} is not a valid host name")
    if len(name) > 253 or max(map(len, name.split("."))) > 63:  # DNS limits, refused by urllib3 only when sending
        raise bad(f"its host {name[:80]!r} is longer than a host name can be (63 characters between dots)")
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(name))  # 127.000.000.001 is 127.0.0.1
    return name


def _path(path: str, bad: Callable[[str], BadBaseUrl]) -> str:
    """`path` with percent-encoding normalised (RFC 3986 6.2.2), then without dot segments or trailing slashes."""
    out: list[str] = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "%":
            digits = path[i + 1 : i + 3]
            if len(digits) != 2 or not all(d in string.hexdigits for d in digits):
                raise bad("its path has a % not followed by two hex digits (write a % itself as %25)")
            char = chr(int(digits, 16))
            out.append(char if char in UNRESERVED else f"%{digits.upper()}")
            i += 3
            continue
        out.append(c if c in PATH_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")))
        i += 1
    segments: list[str] = []
    for segment in "".join(out).split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    return ("/" + "/".join(segments)).rstrip("/")


def sanitize_url(url: str) -> str:
    """The URL without credentials or query, safe to print."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # malformed: nothing of it is shown but its scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "..."
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    base_url: str = DEFAULT_BASE_URL
    token: Secret | None = None
    batch_size: int = MAX_BATCH
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight at most; fewer while Kantata answers 429
    connect_timeout: float = 10.0
    read_timeout: float = 200.0  # how long to wait for an answer; Kantata itself gives up sooner
    # How long the server may keep working on one request: Kantata's API notes say every request times out
    # server-side after 3 minutes. Until then a request left without an answer (a dropped connection, a
    # timeout, a killed run) may still write its rows, so they are looked up, not sent again, for that long.
    server_timeout: float = 180.0
    max_attempts: int = 6  # tries per request before the run stops with `not_sent` rows
    backoff_base: float = 0.5  # seconds; doubled each try, with full jitter, capped by backoff_cap
    backoff_cap: float = 30.0
    # Where the ledger of requests in flight and the per-account upload locks live. It must be the same folder
    # for every run against one account, so that a run learns of another's unanswered requests: the edge fills
    # it from $KANTATA_IMPORT_STATE or $XDG_STATE_HOME (`state_dir_from`).
    state_dir: Path = field(default_factory=lambda: state_dir_from({}))
    stream_results: bool = True  # an upload writes its results workbook while sending, not after the last answer
    prefetch: bool = True  # the CLI starts reading an .xlsx schedule while it imports pandas and pandera
    # How the schedule's cells are read (`ParseOptions.of` takes what it needs): the sheet, text dates that are
    # not ISO, the decimals of an Amount column, and whether the user chose them (a flag, the config file) or
    # took the default.
    sheet: str | None = None  # None: the first sheet whose header row matches
    date_format: str | None = None
    currency_decimals: int = 2
    currency_decimals_given: bool = False
    # A CSV file's text encoding (a Python codec name, "cp1252"); None: told from the bytes, or the run stops and
    # asks for it when it cannot be told for sure.
    encoding: str | None = None
    # Amounts written with a decimal comma ("1.234,50"): True reads every Amount that way, False none; None reads
    # them so only when the whole column is written that way and nothing else.
    decimal_comma: bool | None = None
    # Rows that read like a total (a title starting with Total or Subtotal, an amount summing the rows above) are
    # errors unless the user says they are milestones.
    allow_totals: bool = False
    # Where the token came from, for the run to say so (never the token itself): an environment variable's name
    # or "the token file PATH".
    token_source: str | None = field(default=None, compare=False)
    # The run's log (the CLI configures it; the library only emits events): a file of one line per event, as
    # text or JSON lines.
    log_file: Path | None = None
    log_format: str = "text"
    # The clocks every wait is timed by (importer.clock); a test hands in one that runs its windows at once.
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False)
    # A batch's "sending" line may be written this long before its request leaves (delivery/journal.py): a
    # resume waits that much longer than writes_until for an interrupted run's requests.
    sending_ahead: float = 2.0
    settle_poll: float = 2.0  # seconds between look-ups while waiting for a request that may still be writing
    hold_grace: float = 0.25  # seconds the others wait past a 429's hold for the held request to go first
    # How long an upload waits for another upload to the same account to finish (one at a time per account):
    # None as long as it takes, 0 not at all (--no-wait); then it stops with AccountBusy, nothing sent.
    lock_wait: float | None = None

    @property
    def writes_until(self) -> float:
        """Seconds after a request left until which it may still write its rows: connecting, then the server's
        own limit. A request left without an answer is waited for that long before its rows are sent again."""
        return self.connect_timeout + self.server_timeout

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"--batch-size must be between 1 and {MAX_BATCH} (Kantata's limit per request)")
        if not 0 < self.connect_timeout <= 300:
            raise ConfigError("connect_timeout must be more than 0 and at most 300 seconds")
        if not 1 <= self.read_timeout <= 3600:
            raise ConfigError("read_timeout must be between 1 and 3600 seconds")
        if not 1 <= self.server_timeout <= 3600:
            raise ConfigError("server_timeout must be between 1 and 3600 seconds")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency must be between 1 and {MAX_CONCURRENCY} (requests in flight at once)")
        if self.date_format is not None and "%" not in self.date_format:
            raise ConfigError(f"--date-format {self.date_format!r} has no % codes; write e.g. %d/%m/%Y")
        if not 0 <= self.currency_decimals <= 4:
            raise ConfigError("currency_decimals must be 0 to 4 (2 for USD, 0 for JPY, 3 for KWD)")
        if self.lock_wait is not None and not 0 <= self.lock_wait <= MAX_LOCK_WAIT:
            raise ConfigError(f"--wait must be 0 to {MAX_LOCK_WAIT:g} seconds (leave it out to wait as long as it "
                              "takes; --no-wait is 0)")  # fmt: skip
        if self.encoding is not None:
            try:  # decoding one byte: a codec that is no text encoding (rot13, hex, "undefined") says so
                codecs.lookup(self.encoding)
                b"a".decode(self.encoding)
            except UnicodeDecodeError:
                pass  # a text encoding that cannot read one byte alone (utf-16)
            except (LookupError, UnicodeError, ValueError):
                raise ConfigError(f"--encoding {self.encoding!r} is not an encoding Python knows; use e.g. cp1252, "
                                  "mac_roman, shift_jis, utf-16 or latin-1") from None  # fmt: skip
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)} (is {self.log_format!r})")
        if self.log_file is not None and not isinstance(self.log_file, Path):  # from a config file: text
            object.__setattr__(self, "log_file", Path(self.log_file).expanduser())
        object.__setattr__(self, "base_url", parse_base_url(self.base_url))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config: Mapping[str, object] | None = None,
        token_file: Path | None = None,
        **overrides: object,
    ) -> Settings:
        """Settings from KANTATA_* variables in `environ` (default: this process's environment; this and
        `from_argparse` are the only readers of it) over `config` (a config file's values) over the defaults;
        keyword overrides (from flags) win when not None.

        The token: from `token_file` (the --token-file flag) when given, else from $KANTATA_API_TOKEN or the file
        $KANTATA_API_TOKEN_FILE names; both variables set is refused rather than one silently chosen."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"base_url": DEFAULT_BASE_URL, **(config or {})}
        url_from = "base_url in the config file" if config and "base_url" in config else "base_url"
        if env.get(BASE_URL_ENV):
            values["base_url"] = env[BASE_URL_ENV]
            url_from = BASE_URL_ENV
        values.update(_token_values(env, token_file))
        values["state_dir"] = state_dir_from(env)
        values["stream_results"] = not _switched_on(env, NO_STREAM_ENV)
        values["prefetch"] = not _switched_on(env, NO_PREFETCH_ENV)
        if "currency_decimals" in values:  # a config file chose them
            values["currency_decimals_given"] = True
        if overrides.get("base_url") is not None:
            url_from = "--base-url"
        values.update({k: v for k, v in overrides.items() if v is not None})
        # Checked here first, so that the message names where the URL came from.
        values["base_url"] = parse_base_url(str(values["base_url"]), url_from)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_argparse(
        cls, args: Any, config: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """The command's settings: its flags (an argparse namespace; a flag not given is None or absent) over
        `environ` over `config` over the defaults. A CSV has no sheets, so a config file's sheet is not used
        for one; a sheet given as a flag is (the loader then says a CSV has none)."""
        values = dict(config or {})
        schedule = getattr(args, "schedule", None)
        if schedule is not None and Path(schedule).suffix.casefold() == ".csv":
            values.pop("sheet", None)
        flags = (
            "base_url",
            "batch_size",
            "concurrency",
            "sheet",
            "date_format",
            "currency_decimals",
            "encoding",
            "decimal_comma",
            "allow_totals",
            "lock_wait",
            "log_file",
            "log_format",
        )
        overrides = {name: getattr(args, name, None) for name in flags}
        if overrides["currency_decimals"] is not None:
            overrides["currency_decimals_given"] = True
        return cls.from_env(environ, config=values, token_file=getattr(args, "token_file", None), **overrides)

    def require_token(self, *, interactive: bool) -> Secret:
        """The token, prompting (hidden) when allowed; MissingToken when not."""
        if self.token is not None:
            return self.token
        if interactive and sys.stdin.isatty():
            typed = token(getpass.getpass("Kantata API token (input hidden): "), "what you typed")
            if typed is not None:
                return typed
        raise MissingToken.from_env(TOKEN_ENV)


def _token_values(environ: Mapping[str, str], token_file: Path | None) -> dict[str, object]:
    """The token and where it came from: the flag's file, else one of the two variables (not both)."""
    if token_file is not None:
        source = f"the token file {token_file}"
        return {"token": token_from_file(token_file, "--token-file"), "token_source": source}
    named = environ.get(TOKEN_FILE_ENV)
    if named and environ.get(TOKEN_ENV):
        raise ConfigError(f"both {TOKEN_ENV} and {TOKEN_FILE_ENV} are set: unset one of them, so that it is clear "
                          "which token is used")  # fmt: skip
    if named:
        path = Path(named).expanduser()
        return {"token": token_from_file(path, TOKEN_FILE_ENV), "token_source": f"the token file {path}"}
    if environ.get(TOKEN_ENV) and (given := token(environ[TOKEN_ENV], TOKEN_ENV)) is not None:
        return {"token": given, "token_source": TOKEN_ENV}
    return {}


def _switched_on(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "") not in {"", "0"}


def state_dir_from(environ: Mapping[str, str]) -> Path:
    """The state folder: $KANTATA_IMPORT_STATE, else the platform's folder for an application's state
    (platformdirs): on Linux and other Unixes $XDG_STATE_HOME/kantata-import, else ~/.local/state/kantata-import;
    on macOS ~/Library/Application Support/kantata-import; on Windows %LOCALAPPDATA%\\kantata-import.

    On the XDG platforms the rule is applied here to `environ`, as platformdirs applies it to the process's
    environment: the edge decides which environment counts (a test's, a caller's), not the library."""
    if folder := environ.get(STATE_ENV):
        return Path(folder).expanduser()
    if sys.platform not in ("win32", "darwin"):
        base = environ.get("XDG_STATE_HOME", "").strip() or str(Path.home() / ".local" / "state")
        return Path(base) / APP_NAME
    import platformdirs  # only here: the one place a state folder is chosen

    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))
