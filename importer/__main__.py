from importer.entry import run

raise SystemExit(run())
