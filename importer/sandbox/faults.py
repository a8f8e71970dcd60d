"""The sandbox's fault switches, and the ``sandbox`` command's flag for each.

Each switch makes the sandbox misbehave as Kantata or the network between can: 429 with Retry-After, 5xx, slow
answers, a connection dropped before or after the commit (creates, updates and deletes each counted on their own),
a refused title, and two UNCONFIRMED readings of
Kantata's documentation (partial creates, per-item error indexes) so the importer can be tested against either.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, fields


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Fault switches. Frozen so a request reads one consistent snapshot while another thread changes them."""

    rate_limit_every: int = 0  # every Nth request (any route) answers 429 with Retry-After
    retry_after: float = 1
    fail_every: int = 0  # every Nth POST answers fail_status before writing
    fail_status: int = 503
    fail_html: bool = False  # those failures answer as a proxy in front of Kantata does: an HTML page, not JSON
    latency: float = 0.0  # seconds slept before answering any request
    # With latency: answer `latency` after the request arrived, the work done meanwhile (a server whose response
    # time is `latency`), instead of sleeping first and working after (response time = latency + the work).
    # Writes then happen at arrival, so tests that kill a client while a write is pending keep this off.
    latency_covers_work: bool = False
    drop_after_write_every: int = 0  # every Nth create that wrote commits, then closes the socket unanswered
    # Every Nth create closes the socket unanswered first and commits `late_write_after` seconds later: a request
    # Kantata is still working on when the client lost its connection (a proxy's reset, a network blip).
    drop_then_write_every: int = 0
    late_write_after: float = 0.5
    fail_put_every: int = 0  # every Nth PUT answers fail_status before writing
    drop_after_put_every: int = 0  # every Nth update that wrote commits, then closes the socket unanswered
    fail_delete_every: int = 0  # every Nth DELETE answers fail_status before deleting
    drop_after_delete_every: int = 0  # every Nth delete that deleted commits, then closes the socket unanswered
    reject_title: str | None = None  # an item with exactly this title is invalid ("Title is reserved")
    partial_create: bool = False  # UNCONFIRMED alternative: valid items of a refused batch are created
    error_index: bool = False  # UNCONFIRMED alternative: list errors carry the item's "index"
    paginate_create: bool = True  # a create of many answers only one page (per_page, default 20)
    no_financial_access: bool = False  # documented: workspaces come without `currency` for such a user

    def __post_init__(self) -> None:
        for name in (
            "rate_limit_every",
            "fail_every",
            "drop_after_write_every",
            "drop_then_write_every",
            "fail_put_every",
            "drop_after_put_every",
            "fail_delete_every",
            "drop_after_delete_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Faults.{name} must be a whole number >= 0, not {value!r}")
        if not (400 <= self.fail_status <= 599 or (self.fail_html and self.fail_status == 200)):
            raise ValueError(f"Faults.fail_status must be an HTTP error status (400-599), or 200 with fail_html (a "
                             f"maintenance page answered as a success), not {self.fail_status!r}")  # fmt: skip
        if self.retry_after < 0 or self.latency < 0 or self.late_write_after < 0:
            raise ValueError("Faults.retry_after, Faults.latency and Faults.late_write_after must be >= 0")


def _within(kind: type[int] | type[float], low: float, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type that refuses out-of-range numbers with a clear message instead of a traceback later."""

    def convert(text: str) -> float:
        value = kind(text)
        if not (math.isfinite(value) and low <= value <= high):
            bounds = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {bounds}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return convert


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per switch, in a "faults" group; `faults_from_args` turns them back into `Faults`."""
    default = Faults()
    faults = parser.add_argument_group("faults")
    faults.add_argument("--rate-limit-every", type=_within(int, 0), default=0, metavar="N",
                        help="answer every Nth request with 429 and Retry-After")  # fmt: skip
    faults.add_argument("--retry-after", type=_within(float, 0), default=default.retry_after, metavar="S",
                        help="the Retry-After seconds sent with a 429 (default 1)")  # fmt: skip
    faults.add_argument("--fail-every", type=_within(int, 0), default=0, metavar="N",
                        help="answer every Nth POST with --fail-status, writing nothing")  # fmt: skip
    faults.add_argument("--fail-status", type=_within(int, 400, 599), default=default.fail_status, metavar="CODE",
                        help="status for --fail-every, --fail-put-every and --fail-delete-every "
                             "(default 503)")  # fmt: skip
    faults.add_argument("--fail-html", action="store_true",
                        help="answer those failures with a proxy's HTML error page instead of Kantata's "
                             "JSON")  # fmt: skip
    faults.add_argument(
        "--latency", type=_within(float, 0), default=0.0, metavar="S", help="wait S seconds before answering"
    )
    faults.add_argument("--latency-covers-work", action="store_true",
                        help="answer S seconds after the request arrived, the work done meanwhile")  # fmt: skip
    faults.add_argument("--drop-after-write-every", type=_within(int, 0), default=0, metavar="N",
                        help="every Nth create commits, then closes the connection without answering")  # fmt: skip
    faults.add_argument("--drop-then-write-every", type=_within(int, 0), default=0, metavar="N",
                        help="every Nth create closes the connection without answering, then commits "
                             "--late-write-after seconds later")  # fmt: skip
    faults.add_argument("--late-write-after", type=_within(float, 0), default=default.late_write_after, metavar="S",
                        help="seconds from closing to committing, --drop-then-write-every (default 0.5)")  # fmt: skip
    faults.add_argument("--fail-put-every", type=_within(int, 0), default=0, metavar="N",
                        help="answer every Nth PUT with --fail-status, changing nothing")  # fmt: skip
    faults.add_argument("--drop-after-put-every", type=_within(int, 0), default=0, metavar="N",
                        help="every Nth update commits, then closes the connection without answering")  # fmt: skip
    faults.add_argument("--fail-delete-every", type=_within(int, 0), default=0, metavar="N",
                        help="answer every Nth DELETE with --fail-status, deleting nothing")  # fmt: skip
    faults.add_argument("--drop-after-delete-every", type=_within(int, 0), default=0, metavar="N",
                        help="every Nth delete commits, then closes the connection without answering")  # fmt: skip
    faults.add_argument("--reject-title", metavar="T", help="refuse any milestone titled exactly T")
    faults.add_argument("--partial-create", action="store_true",
                        help="create the valid items of a refused batch (UNCONFIRMED Kantata behaviour)")  # fmt: skip
    faults.add_argument("--error-index", action="store_true",
                        help="give each error of a list the item's index (UNCONFIRMED Kantata behaviour)")  # fmt: skip
    faults.add_argument("--no-paginate-create", dest="paginate_create", action="store_false",
                        help="answer a create with every created milestone, ignoring per_page")  # fmt: skip
    faults.add_argument("--no-financial-access", action="store_true",
                        help="answer as for a user without financial access: projects without currency")  # fmt: skip


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The switches the command line asked for (flags named as the fields, as `add_fault_arguments` adds them)."""
    return Faults(**{f.name: getattr(args, f.name) for f in fields(Faults)})
