"""The container recipe: the Dockerfile keeps hadolint's rules that matter here (checked by reading it, wherever
the suite runs), and where a container engine works, the image is built and run (`pytest -m container`, which
`python3 dev.py test` runs after the main suite; where no engine works that test says so in the summary)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from importer import __version__

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _env() -> dict[str, str]:
    values: dict[str, str] = {}
    for word, rest in _instructions():
        if word == "ENV":
            values.update(re.findall(r"(\w+)=(\S+)", rest))
    return values


def test_the_base_image_is_a_pinned_slim_python_never_latest() -> None:
    """hadolint DL3006/DL3007: an explicit tag, not `latest`; and a patch release, so that a rebuild is the same."""
    bases = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(bases) == 1
    image, _, tag = bases[0].partition(":")
    assert image == "python" and "latest" not in tag and "slim" in tag
    assert re.match(r"3\.\d+\.\d+-", tag), tag


def test_it_runs_as_a_user_of_its_own_from_an_absolute_workdir() -> None:
    """DL3002: the last USER is not root; DL3000: WORKDIR is absolute; the entry point in exec form (DL3025)."""
    steps = _instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert all(rest.startswith("/") for word, rest in steps if word == "WORKDIR")
    entry = [json.loads(rest) for word, rest in steps if word in {"ENTRYPOINT", "CMD"}]
    assert entry[0] == ["kantata-import"]
    order = [word for word, _ in steps]
    assert order.index("USER") < order.index("ENTRYPOINT")


def test_the_state_folder_is_a_declared_volume_the_tool_points_at() -> None:
    state = _env()["KANTATA_IMPORT_STATE"]
    volumes = [
        json.loads(rest) if rest.startswith("[") else rest.split() for w, rest in _instructions() if w == "VOLUME"
    ]
    assert [state] in volumes


def test_no_secret_is_baked_in_and_pip_keeps_no_cache() -> None:
    """No token, password or key in ENV or ARG (they stay in the image's history); DL3042: pip --no-cache-dir;
    DL3020: COPY, not ADD, for files."""
    for word, rest in _instructions():
        if word in {"ENV", "ARG"}:
            assert not re.search(r"TOKEN|SECRET|PASSWORD|KEY", rest, re.IGNORECASE), rest
        if word == "RUN" and "pip install" in rest:
            assert "--no-cache-dir" in rest, rest
        if word == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists" in rest, rest
        assert word != "ADD", "ADD fetches and unpacks; COPY the files instead"


def test_the_build_context_leaves_out_everything_but_the_package() -> None:
    """Schedules, results, journals, a state folder or a token file lying in the folder never enter the image."""
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "**" and {"!pyproject.toml", "!README.md", "!importer/"} <= set(lines)
    copied = [rest.split()[:-1] for word, rest in _instructions() if word == "COPY"]
    assert sorted(sum(copied, [])) == ["README.md", "importer", "pyproject.toml"]


def _engine() -> str | None:
    """Why no container engine can be used here, or None when `docker info` answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command on PATH"
    done = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return f"`docker info` failed: {last}"
    return None


@pytest.mark.container
def test_the_image_builds_and_runs_version_and_a_validate_of_the_sample(tmp_path: Path) -> None:
    why = _engine()
    if why is not None:
        pytest.skip(f"no container engine works here, so the image was not built ({why}); the Dockerfile was linted")
    tag = f"kantata-import-test:{uuid.uuid4().hex[:12]}"
    try:
        subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=900)
        version = subprocess.run(["docker", "run", "--rm", tag, "--version"], capture_output=True, text=True,
                                 timeout=120, check=True)  # fmt: skip
        assert version.stdout.strip() == f"kantata-import {__version__}"
        out = tmp_path / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)  # the image's own user writes here
        checked = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{ROOT / 'samples'}:/work:ro", "-v", f"{out}:/out", tag, "validate",
             "billing_schedule.xlsx", "-o", "/out/results.xlsx", "--log-file", "/out/run.log"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert "48 rows read" in checked.stdout and (out / "results.xlsx").is_file()
        assert "run-end exit_code=0" in (out / "run.log").read_text()
        whoami = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True,
                                text=True, timeout=120, check=True)  # fmt: skip
        assert whoami.stdout.strip() != "0"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)
