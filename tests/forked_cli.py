"""`kantata-import` as its own process, forked from an interpreter that has already imported it.

Starting Python and importing pandas, pandera and openpyxl costs more CPU than most of the commands the suite
runs, and the suite runs many: on two cores, that start-up was a large share of its wall time. Each test worker
therefore keeps one *zygote*, a Python that imported the command once and then forks a child per run. The child
is a real process with its own pid, argv, environment, working directory, standard streams and exit status, and
it runs `python -m importer` as a fresh interpreter would, ending as CPython does (threads joined, atexit run,
streams flushed, exit 120 when that flush fails; a KeyboardInterrupt that escapes ends it by SIGINT). Signals go
through a pidfd, so they reach that child alone even once its pid is free again.

What this cannot imitate stays on `subprocess` with `sys.executable`: the console script itself, a process
started with different interpreter flags or under a wrapper, a child that must be a session leader with a
controlling terminal, and whatever a fresh interpreter takes from its environment before running any code
(PYTHONIOENCODING, the locale's encoding, PYTHONHASHSEED, PYTHONWARNINGS): a child has the zygote's.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PIPE = subprocess.PIPE
_BUFFER = 1 << 20


class Forked:
    """The part of `subprocess.Popen` the tests use, for a child of the zygote."""

    def __init__(self, reply: socket.socket, streams: tuple[IO[str] | None, IO[str] | None, IO[str] | None],
                 args: list[str]):  # fmt: skip
        self.args = args
        self.stdin, stdout, stderr = streams
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._reply = reply
        message, fds, _, _ = socket.recv_fds(reply, 64, 1)
        self.pid = int(message)
        self._pidfd = fds[0]  # opened by the zygote before it could reap the child

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._reply], [], [], 0)[0]:
            self._status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._reply], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._status()
        assert self.returncode is not None
        return self.returncode

    def _status(self) -> None:
        self.returncode = int(self._reply.recv(64))
        self._reply.close()
        os.close(self._pidfd)

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[str, str]:
        if self.stdin is not None:
            stdin = self.stdin

            def write() -> None:
                with contextlib.suppress(BrokenPipeError):  # as Popen: a child that did not read its input
                    stdin.write(input or "")
                    stdin.close()

            threading.Thread(target=write, daemon=True).start()
        read: dict[str, str] = {}
        readers = [threading.Thread(target=lambda n=name, f=f: read.__setitem__(n, f.read()), daemon=True)
                   for name, f in (("out", self.stdout), ("err", self.stderr)) if f is not None]  # fmt: skip
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
            if reader.is_alive():  # a grandchild holds the pipe open: closing it now would block on the reader
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self._close()
        return read.get("out", ""), read.get("err", "")

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _close(self) -> None:
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()


class _Zygote:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = ours
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"import tests.forked_cli as z; z._serve({theirs.fileno()})"],
            cwd=ROOT, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )  # fmt: skip
        theirs.close()
        atexit.register(self.close)

    def start(self, args: Sequence[str], env: Mapping[str, str], cwd: Path | str, stdin: int | None,
              stdout: int | None, stderr: int | None) -> Forked:  # fmt: skip
        theirs_to_close: list[int] = []

        def stream(spec: int | None, mode: str) -> tuple[int, IO[str] | None]:
            if spec == PIPE:
                r, w = os.pipe()
                mine, child = (r, w) if mode == "r" else (w, r)
                theirs_to_close.append(child)
                wrapped = open(mine, mode, encoding=locale.getpreferredencoding(False))  # noqa: SIM115
                return child, wrapped
            if spec is None:
                devnull = os.open(os.devnull, os.O_RDWR)
                theirs_to_close.append(devnull)
                return devnull, None
            return spec, None

        child_in, into = stream(stdin, "w")
        child_out, out = stream(stdout, "r")
        child_err, err = stream(stderr, "r")
        reply, child_reply = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request = json.dumps({"args": list(args), "env": dict(env), "cwd": os.path.abspath(cwd)}).encode()
        try:
            with self._lock:
                socket.send_fds(self._control, [request], [child_in, child_out, child_err, child_reply.fileno()])
        finally:
            child_reply.close()
            for fd in theirs_to_close:
                os.close(fd)
        return Forked(reply, (into, out, err), ["kantata-import", *args])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _the_zygote() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote._process.poll() is not None:
            _zygote = _Zygote()
        return _zygote


def popen(args: Sequence[str], *, env: Mapping[str, str], cwd: Path | str = ROOT, stdin: int | None = None,
          stdout: int | None = PIPE, stderr: int | None = PIPE) -> Forked:  # fmt: skip
    """`subprocess.Popen([python, "-m", "importer", *args], text=True, ...)`, forked from the zygote. A stream given
    as None reads from or writes to /dev/null; a file descriptor is used as it is."""
    if not os.path.isdir(cwd):  # as Popen: the caller's mistake, raised in the caller
        raise FileNotFoundError(f"no such directory: {cwd}")
    return _the_zygote().start(args, env, cwd, stdin, stdout, stderr)


def run(args: Sequence[str], *, env: Mapping[str, str], cwd: Path | str = ROOT, input: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`subprocess.run([python, "-m", "importer", *args], capture_output=True, text=True, ...)`, forked."""
    child = popen(args, env=env, cwd=cwd, stdin=PIPE if input is not None else None)
    out, err = child.communicate(input, timeout=timeout)
    return subprocess.CompletedProcess(["kantata-import", *args], child.wait(), out, err)


# The zygote's side.


def _serve(fd: int) -> None:
    """Import the command once, then fork a child for each request until the test worker goes away."""
    import importer.cli.main  # noqa: F401 - the point: every import a run needs, done once
    import importer.pipeline  # noqa: F401
    import importer.sandbox  # noqa: F401
    import importer.schedule  # noqa: F401

    control = socket.socket(fileno=fd)
    woken_r, woken_w = os.pipe()
    os.set_blocking(woken_w, False)
    signal.set_wakeup_fd(woken_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    replies: dict[int, socket.socket] = {}
    while True:
        ready = select.select([control.fileno(), woken_r], [], [])[0]
        if woken_r in ready:
            os.read(woken_r, 4096)
            _reap(replies)
        if control.fileno() in ready:
            message, fds, _, _ = socket.recv_fds(control, _BUFFER, 4)
            if not message:
                return  # the test worker closed its end
            request = json.loads(message)
            reply = socket.socket(fileno=fds[3])
            pid = os.fork()
            if pid == 0:
                _child(request, fds[:3])
            for received in fds[:3]:
                os.close(received)
            pidfd = os.pidfd_open(pid)
            socket.send_fds(reply, [str(pid).encode()], [pidfd])
            os.close(pidfd)
            replies[pid] = reply
            _reap(replies)


def _reap(replies: dict[int, socket.socket]) -> None:
    while replies:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply = replies.pop(pid)
        with contextlib.suppress(OSError):
            reply.send(str(os.waitstatus_to_exitcode(status)).encode())
        reply.close()


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """Become `python -m importer ARGS`: streams, directory, environment and signals as a fresh interpreter has them,
    then the end CPython gives a program (threads joined, atexit run, streams flushed)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as Popen's close_fds: the zygote's descriptors are not the child's
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    encoding = sys.__stdout__.encoding if sys.__stdout__ else "utf-8"
    sys.stdin = _text(0, "r", encoding, line_buffered=False)
    sys.stdout = _text(1, "w", encoding, line_buffered=os.isatty(1))
    sys.stderr = _text(2, "w", encoding, line_buffered=True, errors="backslashreplace")
    main = str(ROOT / "importer" / "__main__.py")
    sys.argv = [main, *request["args"]]
    code = 0
    interrupted = False
    try:
        import runpy

        runpy.run_module("importer", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        code = _exit_code(exit.code)
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        interrupted = True
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for name in ("stdout", "stderr"):
            try:
                getattr(sys, name).flush()
            except Exception as exc:  # as CPython at exit: said on stderr (if it can be), and the status is 120
                with contextlib.suppress(Exception):
                    os.write(2, f"Exception ignored in: <{name}>\n{type(exc).__name__}: {exc}\n".encode())
                code = 120
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _text(fd: int, mode: str, encoding: str, *, line_buffered: bool, errors: str = "strict") -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, line_buffering=line_buffered)
