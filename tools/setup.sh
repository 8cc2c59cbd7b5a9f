#!/usr/bin/env bash
# Creates tools/.venv (idempotent) with torch (CPU), numpy, zstandard, onnx and onnxruntime,
# which tools/cseg.py and tools/make_fixtures.py need, and scipy and nibabel, which
# tools/reference_cascade.py and tools/make_cascade_fixture.py need. Safe to run again: it only
# installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
py="$venv/bin/python"

if [ -x "$py" ]; then
  echo "setup: venv exists at $venv"
else
  echo "setup: creating venv at $venv"
  python3 -m venv "$venv"
fi

have() { "$py" -c "import $1" >/dev/null 2>&1; }

if have torch; then
  echo "setup: torch $("$py" -c 'import torch; print(torch.__version__)') already installed"
else
  wheel="$(find / -name 'torch-*cpu*.whl' -not -path '/proc/*' 2>/dev/null | head -1 || true)"
  if [ -n "$wheel" ]; then
    echo "setup: installing torch from local wheel $wheel"
    "$py" -m pip install -q "$wheel"
  else
    echo "setup: no local torch wheel found; installing torch from PyPI"
    "$py" -m pip install -q torch
  fi
fi

missing=()
for spec in numpy:numpy zstandard:zstandard onnx:onnx onnxruntime:onnxruntime scipy:scipy nibabel:nibabel; do
  mod="${spec%%:*}"; pkg="${spec##*:}"
  if have "$mod"; then echo "setup: $pkg already installed"; else missing+=("$pkg"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} from PyPI"
  "$py" -m pip install -q "${missing[@]}"
fi

"$py" - <<'PY'
import importlib
for m in ("torch", "numpy", "zstandard", "onnx", "onnxruntime", "scipy", "nibabel"):
    try:
        print(f"setup: {m} {importlib.import_module(m).__version__}")
    except Exception as e:  # onnx/onnxruntime are optional for make_fixtures.py
        print(f"setup: {m} NOT available ({e})")
PY
echo "setup: done; use $py"
