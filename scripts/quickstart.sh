#!/usr/bin/env bash
# Install stemrun into .venv and run `stemrun up` (workers + beat) on stem.yaml.example (embedded SQLite, no services).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "stemrun is running on stem.yaml.example; in another terminal try:" >&2
echo "  .venv/bin/stemrun enqueue -C stem.yaml.example math.add -a x=1 -a y=2 --wait" >&2
exec stemrun up -C stem.yaml.example
