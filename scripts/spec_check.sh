#!/usr/bin/env bash
# Hold Apiframe's OpenAPI contract against a fresh Castframe: see scripts/spec_check.py's
# docstring (what runs, the two deliberate edits to Apiframe's document: the 409 of a reused
# Idempotency-Key is accepted as Apiframe's SDK's ConflictError, BearerAuth is dropped).
#
#   scripts/spec_check.sh [--spec PATH] [--max-examples N] [--only TEXT] [--keep]
#
# Environment: CASTFRAME_VENV (default ./.venv if present, else /work/main/.venv),
# APIFRAME_SPEC (default ../shared/research/apiframe-v2-openapi.json from the repo),
# SPEC_CHECK_MAX_EXAMPLES (default 10). Installs schemathesis into the venv if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${CASTFRAME_VENV:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then CASTFRAME_VENV=.venv; else CASTFRAME_VENV=/work/main/.venv; fi
fi
PY="$CASTFRAME_VENV/bin/python"
if ! "$PY" -c "import schemathesis" 2>/dev/null; then
  echo "spec_check: installing schemathesis into $CASTFRAME_VENV"
  "$PY" -m pip install -q schemathesis
fi
exec "$PY" scripts/spec_check.py "$@"
