#!/usr/bin/env bash
# Builds the image an export runs, from this checkout of nborch, with no registry:
#   scripts/build_image.sh [-t TAG] [-f DOCKERFILE] [--base BASE_IMAGE] [APP_DIR]
# APP_DIR (default: an empty folder) holds your executor modules and a requirements.txt;
# DOCKERFILE (default: one `nborch export` writes) is the one next to your compose file or
# manifests. Containers cannot reach a package index, so nborch and every dependency are
# built here into a wheelhouse (cached in $NBORCH_WHEELHOUSE, default .cache/wheelhouse)
# that the Dockerfile installs from with `pip --no-index`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=nborch:$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
dockerfile= base=nborch-base:bookworm app=
while [ $# -gt 0 ]; do
    case $1 in
        -t) tag=$2; shift 2 ;;
        -f) dockerfile=$2; shift 2 ;;
        --base) base=$2; shift 2 ;;
        -*) echo "build_image.sh: unknown option $1" >&2; exit 2 ;;
        *) app=$1; shift ;;
    esac
done
default_python=python3
[ -x "$repo/.venv/bin/python" ] && default_python=$repo/.venv/bin/python
python=${PYTHON:-$default_python}
wheelhouse=${NBORCH_WHEELHOUSE:-$repo/.cache/wheelhouse}
context=$(mktemp -d /tmp/nborch-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
start=$(date +%s)

# The base image's Python decides which binary wheels fit: build them for that version.
image_python=$(docker run --rm --entrypoint python3 "$base" -c \
    'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
host_python=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$image_python" != "$host_python" ]; then
    echo "build_image.sh: $base has Python $image_python, $python is $host_python: set PYTHON" \
         "to a Python $image_python so the wheels fit" >&2
    exit 2
fi
mkdir -p "$wheelhouse"
rm -f "$wheelhouse"/nborch-*.whl  # always this checkout's nborch
# From the cached wheels alone when they cover every dependency (fast), else from the index.
"$python" -m pip wheel -q --no-index --wheel-dir "$wheelhouse" --find-links "$wheelhouse" \
        "$repo" 2> /dev/null \
    || "$python" -m pip wheel -q --wheel-dir "$wheelhouse" --find-links "$wheelhouse" "$repo"

if [ -n "$app" ]; then
    cp -a "$app"/. "$context"/
fi
mkdir -p "$context/wheelhouse"
cp "$wheelhouse"/*.whl "$context/wheelhouse/"
if [ -z "$dockerfile" ]; then
    dockerfile=$context/.Dockerfile
    (cd "$repo" && "$python" -c 'from nborch.export import dockerfile; print(dockerfile("nborch", "'"$tag"'"), end="")') > "$dockerfile"
fi
docker build -q -f "$dockerfile" -t "$tag" --build-arg BASE_IMAGE="$base" "$context" > /dev/null
echo "image $tag built in $(( $(date +%s) - start )) s"
