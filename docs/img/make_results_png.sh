#!/bin/sh
# Regenerates docs/img/results.png: the results workbook of the bundled sample, uploaded to the built-in sandbox,
# rendered by LibreOffice (headless) and poppler. Not part of CI; needs libreoffice-calc and poppler-utils.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/samples/billing_schedule.xlsx" "$work/schedule.xlsx"
(cd "$here" && python3 -m importer upload "$work/schedule.xlsx" --sandbox -q -o "$work/results.xlsx" >/dev/null)
soffice --headless --convert-to pdf --outdir "$work" "$work/results.xlsx" >/dev/null
pdftoppm -png -r 70 -f 1 -l 1 -singlefile "$work/results.pdf" "$here/docs/img/results"
