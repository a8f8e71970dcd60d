"""A Kantata OX look-alike on loopback: the demo's, the tests' and the benchmarks' server."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
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
        faults_from_args as faults_from_args,
    )
    from importer.sandbox.server import (
        serve as serve,
    )

_HOMES = {
    "DEFAULT_TOKEN": "server",
    "Sandbox": "server",
    "add_arguments": "server",
    "faults_from_args": "server",
    "serve": "server",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = [
    "DEFAULT_TOKEN",
    "Sandbox",
    "add_arguments",
    "faults_from_args",
    "serve",
]
