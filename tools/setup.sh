#!/usr/bin/env bash
# Creates tools/.venv (idempotent) with torch (CPU), numpy, zstandard, onnx and onnxruntime,
# which tools/cseg.py and tools/make_fixtures.py need, scipy and nibabel, which
# tools/reference_cascade.py and tools/make_cascade_fixture.py need, and onnxscript (torch's
# dynamo-based ONNX exporter), monai, einops and dynamic-network-architectures (nnU-Net's
# networks), which tools/make_onnx_fixtures.py needs. Safe to run again: it only installs what
# is missing.
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

# Installs, in one pip call, the packages of the `module:requirement` specs whose module is missing.
install_missing() {
  local missing=() spec mod pkg
  for spec in "$@"; do
    mod="${spec%%:*}"; pkg="${spec##*:}"
    if have "$mod"; then echo "setup: $mod already installed"; else missing+=("$pkg"); fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]} from PyPI"
    "$py" -m pip install -q "${missing[@]}"
  fi
}

install_missing numpy:numpy zstandard:zstandard onnx:onnx onnxruntime:onnxruntime scipy:scipy nibabel:nibabel matplotlib:matplotlib

# Networks for tools/make_onnx_fixtures.py. dynamic-network-architectures goes in without its
# dependencies: its timm requirement pulls a torchvision built for another torch, which breaks
# the CPU torch; only einops is needed for the U-Nets. monai keeps the installed torch.
install_missing onnxscript:onnxscript==0.7.2 einops:einops==0.8.2 monai:monai==1.6.1
if have dynamic_network_architectures; then
  echo "setup: dynamic-network-architectures already installed"
else
  echo "setup: installing dynamic-network-architectures (--no-deps) from PyPI"
  "$py" -m pip install -q --no-deps dynamic-network-architectures==0.4.4
fi

"$py" - <<'PY'
import importlib
for m in ("torch", "numpy", "zstandard", "onnx", "onnxruntime", "scipy", "nibabel", "matplotlib", "onnxscript", "einops",
          "monai", "dynamic_network_architectures"):
    try:
        print(f"setup: {m} {getattr(importlib.import_module(m), '__version__', '(no version)')}")
    except Exception as e:  # onnx/onnxruntime are optional for make_fixtures.py
        print(f"setup: {m} NOT available ({e})")
PY
echo "setup: done; use $py"
