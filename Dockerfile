# kantata-import as a container for scheduled runs: docs/unattended.md shows how to run it monthly.
# The base is pinned to a patch release, so that a rebuild gives the same image; raise it deliberately.
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KANTATA_IMPORT_STATE=/state

# A user of its own: the tool needs no root, and files it writes to a mounted folder are not root's.
RUN groupadd --system --gid 10001 kantata \
    && useradd --system --uid 10001 --gid kantata --create-home --home-dir /home/kantata kantata \
    && mkdir /state /work \
    && chown kantata:kantata /state /work

COPY pyproject.toml README.md /src/
COPY importer /src/importer
RUN pip install --no-cache-dir /src \
    && rm -rf /src

USER kantata
WORKDIR /work
# The record of requests whose answer never came, and the per-account locks: it must outlive the container, or
# a run after a crash cannot know what the crashed one sent. Mount a named volume or a host folder here.
VOLUME ["/state"]
ENTRYPOINT ["kantata-import"]
CMD ["--help"]
