"""The page refuses what did not come from the launch URL, on this machine's own address (plain HTTP)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from importer.web import Served
from tests.conftest import MakeSchedule, good_row

ROOT = Path(__file__).resolve().parents[2]


def test_without_the_secret_nothing_is_answered(served: Served) -> None:
    for path in ("/", "/api/progress", "/results.xlsx", "/template.xlsx", "/static/app.js"):
        answer = httpx.get(served.origin + path)
        assert answer.status_code == 403, path
        assert "kantata-import serve printed" in answer.text
    wrong = httpx.get(served.origin + "/?key=guessed", follow_redirects=False)
    assert wrong.status_code == 403


def test_the_launch_url_sets_the_cookie_that_opens_the_rest(served: Served) -> None:
    with httpx.Client() as client:
        launch = client.get(served.url, follow_redirects=False)
        assert launch.status_code == 303 and "httponly" in launch.headers["set-cookie"].lower()
        assert client.get(served.origin + "/").status_code == 200
        assert client.get(served.origin + "/api/progress").json() == {"running": False}
        template = client.get(served.origin + "/template.xlsx")
        assert template.status_code == 200 and template.content[:2] == b"PK"


def test_a_foreign_host_header_is_refused_even_with_the_secret(served: Served) -> None:
    with httpx.Client() as client:
        client.get(served.url)
        answer = client.get(served.origin + "/", headers={"Host": f"evil.example:{served.origin.rsplit(':', 1)[1]}"})
        assert answer.status_code == 421
        assert client.get(served.origin + "/", headers={"Host": "evil.example"}).status_code == 421


def test_a_file_over_the_cap_is_refused_before_it_is_read(served: Served) -> None:
    host = served.origin.removeprefix("http://")
    secret = served.bench.secret
    with socket.create_connection(tuple(host.rsplit(":", 1))) as raw:  # type: ignore[arg-type]
        raw.sendall(f"POST /api/schedule HTTP/1.1\r\nHost: {host}\r\nCookie: kantata_import_secret={secret}\r\n"
                    f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {200 * 2**20}\r\n\r\n"
                    .encode())  # fmt: skip
        assert raw.recv(200).startswith(b"HTTP/1.1 413")


def test_the_session_folder_is_removed_at_the_end(served: Served, make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(1)])
    with httpx.Client() as client:
        client.get(served.url)
        answer = client.post(served.origin + "/api/schedule", files={"file": (path.name, path.read_bytes())})
        assert answer.json()["counts"]["valid"] == 1
    folder = served.bench.folder
    assert (folder / "schedules" / path.name).exists()
    served.bench.close()
    assert not folder.exists()


def test_the_cli_without_the_page_imports_none_of_its_stack(make_schedule: MakeSchedule) -> None:
    path = make_schedule([good_row(1)])
    code = ("import sys; from importer.cli.main import main; main(['validate', sys.argv[1], '-q']); print("
            "sorted(m for m in ('starlette', 'uvicorn', 'jinja2', 'multipart') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_serve_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    blocker = tmp_path / "sitecustomize.py"  # the modules of the extra look absent to this process only
    blocker.write_text(
        "import sys\nfor m in ('starlette', 'uvicorn', 'multipart', 'jinja2'):\n    sys.modules[m] = None\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "importer", "serve", "--no-browser"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert 'pip install "kantata-import[web]"' in done.stderr


def test_another_host_needs_the_explicit_flag() -> None:
    done = subprocess.run([sys.executable, "-m", "importer", "serve", "--host", "0.0.0.0", "--no-browser"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--allow-remote" in done.stderr
