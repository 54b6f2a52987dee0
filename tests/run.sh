#!/usr/bin/env bash
# Set up everything the tests need (idempotent, fast when present), check lint, format and types
# (ruff, mypy), then run pytest.
# Usage: tests/run.sh [pytest arguments]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# System packages: GDAL + its Python bindings (must match the system GDAL), PROJ grids,
# ShellCheck for the shell-script tests, sqlite3 for inspecting ledgers.
apt_packages=(gdal-bin libgdal-dev proj-data python3-gdal python3-numpy python3-venv python3-yaml shellcheck sqlite3)
missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A virtualenv on Debian's python3 sees python3-gdal and numpy; it lives outside the clone,
# keyed by pyproject.toml, so a fresh clone reuses it. The project itself is not installed
# into it (pytest puts code/ on sys.path), so one venv serves every clone.
system_python=/usr/bin/python3
key=$(cat pyproject.toml tests/run.sh | sha256sum | cut -c1-12)
venv=${INSAR_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/insar-pipeline/venv-$key}
mkdir -p "$(dirname "$venv")"
# Two test runs at once (e.g. CI and a developer) must not build the same venv together.
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    echo "tests/run.sh: creating $venv" >&2
    rm -rf "$venv"
    "$system_python" -m venv --system-site-packages "$venv"
    # Keep the system numpy: python3-gdal's compiled array module is built against it.
    constraints="$venv/constraints.txt"
    "$system_python" -c 'import numpy; print(f"numpy=={numpy.__version__}")' > "$constraints"
    "$venv/bin/python" - > "$venv/requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    print(requirement)
PY
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -c "$constraints" -r "$venv/requirements.txt"
    touch "$venv/.complete"
fi
flock -u 9
exec 9>&-

# Lint, format and types first: a failure there is fast. INSAR_SKIP_CHECKS=1 skips them while
# iterating on one test; CI never sets it.
if [ "${INSAR_SKIP_CHECKS:-0}" != 1 ]; then
    "$venv/bin/ruff" check --no-cache code tests bench
    "$venv/bin/ruff" format --check --no-cache code tests bench
    "$venv/bin/mypy"  # which files, how strict: pyproject.toml
fi

exec "$venv/bin/python" -m pytest "$@"
