# Source on a bare GPU machine in the repo root, after scripts/gpu_pack.sh ran where pip works
# and .gpu/ travelled with the tree: installs the carried wheels into /tmp/site (no index, no
# deps: torch, transformers, numpy, pandas... come from the machine's image) and points
# GEOMLENS_CACHE at the carried token cache.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export GEOMLENS_CACHE=$PWD/.gpu/cache PYTHONUNBUFFERED=1
