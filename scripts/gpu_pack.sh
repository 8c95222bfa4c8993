#!/usr/bin/env bash
# Pack what a bare, offline GPU machine needs to train geomlens's from-scratch configs
# (knn_heads_gpu, kv_train_gpu, tied_untied_gpu) into .gpu/ (git-ignored, ~30 MB):
#   .gpu/whl/    wheels of the pure-Python deps that a stock CUDA PyTorch image lacks
#   .gpu/cache/  the train_gpu split tokenized with the SmolLM2 tokenizer and the tokenizer
#                itself (GEOMLENS_CACHE layout; benchmarks/gpu_sharding.sh reads text with it)
# On the GPU machine: `source scripts/gpu_env.sh`, then `geomlens run ...` as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .gpu/whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl transformer-lens==3.9.0 better-abc==0.0.3 fancy-einsum==0.0.3 beartype==0.23.1 \
  typeguard==4.6.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
GEOMLENS_CACHE=$PWD/.gpu/cache "$PY" -c \
  "from geomlens.models.tokens import load_token_stream; print(load_token_stream('train_gpu').shape)"
GEOMLENS_CACHE=$PWD/.gpu/cache "$PY" -c "
from geomlens.models.cache import model_cache_dir
from geomlens.models.tokenizer import load_tokenizer
load_tokenizer('smollm2-135m').save_pretrained(model_cache_dir('smollm2-135m') / 'tokenizer')"
du -sh .gpu
