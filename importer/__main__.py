from importer.cli import run

raise SystemExit(run())
