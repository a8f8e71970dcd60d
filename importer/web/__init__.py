"""The optional web page (`kantata-import serve`): a thin caller of the public library; needs the `web` extra."""

from typing import TYPE_CHECKING

from importer._face import lazy

if TYPE_CHECKING:
    from importer.web.app import Workbench as Workbench
    from importer.web.app import create_app as create_app
    from importer.web.server import Served as Served
    from importer.web.server import serve as serve
    from importer.web.server import started as started

_HOMES = {
    "Served": "server",
    "Workbench": "app",
    "create_app": "app",
    "serve": "server",
    "started": "server",
}

__getattr__, __dir__ = lazy(__name__, _HOMES)

__all__ = sorted(_HOMES)
