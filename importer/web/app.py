"""The page's routes: each one calls the library (run_validate, run_upload, write_template) and returns JSON.

One person's session per server: the schedule dropped, the connection (the token in memory only), the upload
running on a worker thread with its Stop switch and progress feed. Every request must carry the launch secret
(a cookie set from the launch URL) and a Host header naming this server, so that no other site, nor a DNS
rebinding of one, can drive it.
"""

from __future__ import annotations

import hmac
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from importer.delivery import StopSwitch
from importer.errors import ImporterError
from importer.pipeline import RunResult, run_upload, run_validate
from importer.progress import ProgressFeed
from importer.results import decimals_for, write_template
from importer.settings import Secret, Settings, redact, sanitize_url, token
from importer.summary import error_kind, run_summary

HERE = Path(__file__).resolve().parent
COOKIE = "kantata_import_secret"
MAX_UPLOAD = 50 * 1024 * 1024  # bytes: larger than any schedule the loader accepts, small enough for memory
SUFFIXES = {".xlsx", ".xlsm", ".csv"}


@dataclass(slots=True)
class Job:
    """One upload on its worker thread."""

    stop: StopSwitch = field(default_factory=StopSwitch)
    feed: ProgressFeed = field(default_factory=ProgressFeed)
    thread: threading.Thread | None = None
    result: RunResult | None = None
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class Workbench:
    """The session's state. `settings` come from the edge (the CLI); the page adds the base URL and token."""

    settings: Settings
    secret: str
    hosts: frozenset[str]
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kantata-import-web-")))
    schedule: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    connected: Settings | None = None
    job: Job | None = None
    last: RunResult | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Stop a running upload as Ctrl-C would, wait for its workbook, then remove the session's folder."""
        job = self.job
        if job is not None and job.thread is not None and job.thread.is_alive():
            job.stop.press()
            job.thread.join()
        shutil.rmtree(self.folder, ignore_errors=True)

    def held(self) -> list[Secret | None]:
        return [self.settings.token, self.connected.token if self.connected else None]

    def run_settings(self, base: Settings) -> Settings:
        decimals = self.options.get("currency_decimals")
        return replace(base, sheet=self.options.get("sheet") or None,
                       date_format=self.options.get("date_format") or None,
                       currency_decimals=base.currency_decimals if decimals is None else decimals,
                       currency_decimals_given=decimals is not None or base.currency_decimals_given)  # fmt: skip

    @property
    def output(self) -> Path:
        assert self.schedule is not None
        return self.folder / f"{self.schedule.stem}.results.xlsx"


class Guard:
    """Refuses a request without the launch secret or with a foreign Host header; `/?key=SECRET` sets the cookie."""

    def __init__(self, app: ASGIApp, bench: Workbench) -> None:
        self.app, self.bench = app, bench

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = request.headers.get("host", "")
        if host not in self.bench.hosts:
            await _text("this page answers only at its own address (the Host header names another)", 421)(
                scope, receive, send
            )
            return
        if int(request.headers.get("content-length") or 0) > MAX_UPLOAD + 64 * 1024:  # the form's own fields
            await _text(f"a schedule may be {MAX_UPLOAD // 2**20} MB at most", 413)(scope, receive, send)
            return
        key = request.query_params.get("key")
        if request.url.path == "/" and key is not None and hmac.compare_digest(key, self.bench.secret):
            answer = RedirectResponse("/", 303)
            answer.set_cookie(COOKIE, self.bench.secret, httponly=True, samesite="strict")
            await answer(scope, receive, send)
            return
        if not hmac.compare_digest(request.cookies.get(COOKIE, ""), self.bench.secret):
            await _text("open the address kantata-import serve printed (it carries this session's key)", 403)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


def _text(message: str, status: int) -> Response:
    return Response(message, status, media_type="text/plain")


def _refuse(message: str, *, kind: str = "unusable-input", exit_code: int = 2, status: int = 400) -> JSONResponse:
    """An answer the page shows in its error line: what to do, in the CLI's words and with its exit code."""
    return JSONResponse({"error": {"kind": kind, "message": message, "exit_code": exit_code}}, status)


def _problem(exc: ImporterError, bench: Workbench) -> JSONResponse:
    message = redact(str(exc), *bench.held())
    return JSONResponse({"error": {"kind": error_kind(exc), "message": message, "exit_code": int(exc.exit_code)}},
                        400)  # fmt: skip


def _check(result: RunResult, default_decimals: int) -> dict[str, Any]:
    """What the page shows of a run: its --json summary (each issue at its Excel coordinates), and the decimal
    places of each project's currency, for showing its cents."""
    summary = run_summary(result, command="upload" if not result.dry_run else "validate")
    for total in summary["totals"]:
        total["decimals"] = decimals_for(total["currency"], default_decimals)
    summary["schedule"] = result.schedule.name if result.schedule else None  # not the session folder's path
    summary["output"] = result.output.name
    return summary


def create_app(settings: Settings, *, secret: str, hosts: frozenset[str]) -> tuple[Starlette, Workbench]:
    """The page's app and its session; `hosts` are the Host header values it answers to."""
    bench = Workbench(settings, secret, hosts)
    pages = Jinja2Templates(directory=HERE / "templates")

    async def index(request: Request) -> Response:
        base = bench.settings
        return pages.TemplateResponse(request, "index.html", {
            "base_url": sanitize_url(base.base_url), "token_in_env": base.token is not None})  # fmt: skip

    async def schedule(request: Request) -> Response:
        async with request.form(max_files=1, max_fields=10, max_part_size=MAX_UPLOAD) as form:
            upload = form.get("file")
            options = {k: str(form.get(k) or "").strip() for k in ("sheet", "date_format", "currency_decimals")}
            if isinstance(upload, UploadFile):
                name = Path(upload.filename or "schedule").name
                if Path(name).suffix.casefold() not in SUFFIXES:
                    return _refuse(f"{name}: choose an .xlsx or .csv file")
                data = await upload.read(MAX_UPLOAD + 1)
                if len(data) > MAX_UPLOAD:
                    return _refuse(f"{name} is over {MAX_UPLOAD // 2**20} MB", status=413)
                with bench.lock:
                    if bench.job is not None and bench.job.result is None and bench.job.error is None:
                        return _refuse("an upload is running: stop it first", kind="busy", status=409)
                    folder = bench.folder / "schedules"
                    folder.mkdir(exist_ok=True)
                    (folder / name).write_bytes(data)
                    bench.schedule, bench.job, bench.last = folder / name, None, None
        if bench.schedule is None:
            return _refuse("drop a schedule first")
        decimals = options.pop("currency_decimals")
        bench.options = {**options, **({"currency_decimals": int(decimals)} if decimals.isdigit() else {})}
        try:
            settings = bench.run_settings(bench.settings)
            result = await run_in_threadpool(run_validate, bench.schedule, output=bench.output, settings=settings,
                                             online=False)  # fmt: skip
        except ImporterError as exc:
            return _problem(exc, bench)
        bench.last = result
        return JSONResponse(_check(result, bench.run_settings(bench.settings).currency_decimals))

    async def connect(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=5)
        if bench.schedule is None:
            return _refuse("drop a schedule first")
        try:
            typed = token(str(form.get("token") or ""), "the token field")
            given = typed or bench.settings.token
            if given is None:
                return _refuse("type the API token, or start the server with KANTATA_API_TOKEN set",
                               kind="missing-token", exit_code=3)  # fmt: skip
            base_url = str(form.get("base_url") or bench.settings.base_url)
            connected = replace(bench.settings, base_url=base_url, token=given)
            result = await run_in_threadpool(run_validate, bench.schedule, output=bench.output,
                                             settings=bench.run_settings(connected), online=True)  # fmt: skip
        except ImporterError as exc:
            return _problem(exc, bench)
        bench.connected, bench.last = connected, result
        return JSONResponse(_check(result, bench.run_settings(bench.settings).currency_decimals))

    async def upload(request: Request) -> Response:
        with bench.lock:
            if bench.connected is None or bench.schedule is None:
                return _refuse("connect to Kantata first", kind="usage-error")
            if bench.job is not None and bench.job.thread is not None and bench.job.thread.is_alive():
                return _refuse("an upload is already running", kind="busy", status=409)
            job = bench.job = Job()
            settings, schedule, output = bench.run_settings(bench.connected), bench.schedule, bench.output

            def work() -> None:
                try:
                    job.result = run_upload(schedule, settings, output=output, on_progress=job.feed,
                                            on_stage=job.feed.say, stop=job.stop)  # fmt: skip
                    bench.last = job.result
                except ImporterError as exc:
                    job.error = {"kind": error_kind(exc), "message": redact(str(exc), *bench.held()),
                                 "exit_code": int(exc.exit_code)}  # fmt: skip
                except KeyboardInterrupt:  # stopped before the sending began: nothing was sent
                    job.error = {"kind": "interrupted", "message": "stopped before anything was sent",
                                 "exit_code": 130}  # fmt: skip
                finally:
                    job.feed.say("done")

            job.thread = threading.Thread(target=work, name="kantata-import-web-upload", daemon=True)
            job.thread.start()
        return JSONResponse({"started": True}, 202)

    async def progress(request: Request) -> Response:
        job = bench.job
        if job is None:
            return JSONResponse({"running": False})
        body: dict[str, Any] = {"running": job.result is None and job.error is None, **job.feed.snapshot()}
        if job.result is not None:
            body["summary"] = _check(job.result, bench.run_settings(bench.settings).currency_decimals)
        if job.error is not None:
            body["error"] = job.error
        return JSONResponse(body)

    async def stop(request: Request) -> Response:
        if bench.job is not None:
            bench.job.stop.press()
        return JSONResponse({"stopping": bench.job is not None})

    async def results(request: Request) -> Response:
        if bench.last is None or not bench.last.output.exists():
            return _text("no results yet", 404)
        return FileResponse(bench.last.output, filename=bench.last.output.name)

    async def summary(request: Request) -> Response:
        if bench.last is None:
            return _text("no results yet", 404)
        body = json.dumps(_check(bench.last, bench.run_settings(bench.settings).currency_decimals), indent=2)
        name = f"{bench.last.output.stem}.summary.json"
        return Response(body, media_type="application/json",
                        headers={"content-disposition": f'attachment; filename="{name}"'})  # fmt: skip

    async def template(request: Request) -> Response:
        path = bench.folder / "billing_schedule.xlsx"
        if not path.exists():
            write_template(path)
        return FileResponse(path, filename=path.name)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/schedule", schedule, methods=["POST"]),
            Route("/api/connect", connect, methods=["POST"]),
            Route("/api/upload", upload, methods=["POST"]),
            Route("/api/progress", progress),
            Route("/api/stop", stop, methods=["POST"]),
            Route("/results.xlsx", results),
            Route("/summary.json", summary),
            Route("/template.xlsx", template),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(Guard, bench=bench)],
    )
    return app, bench
