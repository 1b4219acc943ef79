#!/bin/sh
# Builds app.py into {{name}}.wasm, installing componentize-py into .venv first.
# The plugin and the SDK (the berth/ package) are found in this folder.
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/componentize-py --wit-path wit --world plugin componentize --python-path . app --output {{name}}.wasm
echo "built {{name}}.wasm"
