#!/usr/bin/env bash
# Create the Python venv at $QUENCH_VENV with the pinned packages of scripts/requirements.txt.
# Re-runs are instant while requirements.txt is unchanged (stamp file in the venv).
set -euo pipefail
source "$(dirname "$0")/env.sh"
REQ=$QUENCH_SCRIPTS/requirements.txt
STAMP=$QUENCH_VENV/.quench-requirements
if [ -x "$QUENCH_PY" ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then exit 0; fi
command -v python3 >/dev/null || die "python3 not found (need Python >= 3.10 with the venv module)"
mkdir -p "$QUENCH_CACHE"
if [ ! -x "$QUENCH_PY" ]; then
  echo "creating venv $QUENCH_VENV" >&2
  python3 -m venv "$QUENCH_VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
echo "installing $(tr '\n' ' ' < "$REQ")" >&2
"$QUENCH_PY" -m pip install -q --disable-pip-version-check -r "$REQ" || die "pip install -r $REQ failed"
cp "$REQ" "$STAMP"
