"""A Kantata OX look-alike on loopback: the demo's, the tests' and the benchmarks' server."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.sandbox.faults import (
        Faults as Faults,
    )
    from importer.sandbox.faults import (
        faults_from_args as faults_from_args,
    )
    from importer.sandbox.server import (
        DEFAULT_TOKEN as DEFAULT_TOKEN,
    )
    from importer.sandbox.server import (
        Sandbox as Sandbox,
    )
    from importer.sandbox.server import (
        add_arguments as add_arguments,
    )
    from importer.sandbox.server import (
        serve as serve,
    )
    from importer.sandbox.store import (
        SEED_STORIES as SEED_STORIES,
    )
    from importer.sandbox.store import (
        SEED_WORKSPACES as SEED_WORKSPACES,
    )
    from importer.sandbox.store import (
        Story as Story,
    )
    from importer.sandbox.store import (
        Workspace as Workspace,
    )

_HOMES = {
    "DEFAULT_TOKEN": "server",
    "Faults": "faults",
    "SEED_STORIES": "store",
    "SEED_WORKSPACES": "store",
    "Sandbox": "server",
    "Story": "store",
    "Workspace": "store",
    "add_arguments": "server",
    "faults_from_args": "faults",
    "serve": "server",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = sorted(_HOMES)
