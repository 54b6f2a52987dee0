#!/usr/bin/env bash
# Container entry point (after the micromamba entrypoint has activated the conda environment):
# check what every run needs, so that a broken image or a wrong mount gives one clear message
# instead of a traceback in the middle of a batch, then hand over to the scheduler.
#   bash code/entrypoint.sh [COMMAND] [OPTIONS]   ->   python code/main_parallel.py ...
# INSAR_DATA_DIR: where the data folder is mounted (default /data).
# Exit 2, like any bad configuration (SPEC.md section 3), when a check fails.
set -euo pipefail

code_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data_dir=${INSAR_DATA_DIR:-/data}

fail() {
    printf 'entrypoint: %s\n' "$@" >&2
    exit 2
}

# Show the end of a failed check's output: ISCE's own words are the useful part.
show_tail() {
    printf '%s\n' "$1" | tail -n 15 | sed 's/^/    /' >&2
}

check_data_dir() {
    [ -e "$data_dir" ] || fail "$data_dir does not exist: mount your data folder there" \
        "(./run_docker.sh does; by hand: docker run -v \"\$PWD/data:$data_dir\" ...)."
    [ -d "$data_dir" ] || fail "$data_dir is not a folder: mount your data folder there."
    local probe
    # Try a real write: -w alone trusts permission bits that some mounts do not honour.
    if ! probe=$(mktemp "$data_dir/.write-test.XXXXXX" 2>/dev/null); then
        fail "$data_dir is not writable by user $(id -u):$(id -g)." \
            "Run the container as the owner of the data folder (./run_docker.sh passes" \
            "--user \$(id -u):\$(id -g)), or give that user write access to it."
    fi
    rm -f "$probe"
}

# Run as the host user (--user UID:GID), the process has no account and HOME is / or another
# user's: give the tools that keep caches there (matplotlib, dask) a writable one.
ensure_home() {
    if [ -z "${HOME:-}" ] || [ "$HOME" = / ] || [ ! -w "$HOME" ]; then
        HOME=${TMPDIR:-/tmp}/insar-home-$(id -u)
        export HOME
        mkdir -p "$HOME"
    fi
}

check_isce() {
    local output
    if ! output=$(python -c 'import isce' 2>&1); then
        show_tail "$output"
        fail "python cannot import isce (ISCE_HOME=${ISCE_HOME:-unset}): the image's ISCE2" \
            "install is broken. Rebuild it: ./run_docker.sh --rebuild"
    fi
    # The version conda-forge gave the image (environment.yml pins a range): plan shows it too.
    ISCE2_VERSION=$(python -c 'import isce; print(isce.__version__)' 2> /dev/null) || ISCE2_VERSION=""
    export ISCE2_VERSION
    printf 'entrypoint: ISCE2 %s\n' "${ISCE2_VERSION:-(version unknown)}" >&2
    if ! command -v topsApp.py > /dev/null 2>&1; then
        fail "topsApp.py is not on PATH (ISCE_HOME=${ISCE_HOME:-unset}; PATH must hold" \
            "\$ISCE_HOME/applications). Rebuild the image: ./run_docker.sh --rebuild"
    fi
    # `--help --steps` prints the step list and exits 0: ISCE imports and configures itself.
    # It runs in a scratch folder because ISCE writes log files into the current one.
    local scratch status=0
    scratch=$(mktemp -d)
    output=$(cd "$scratch" && topsApp.py --help --steps 2>&1) || status=$?
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        show_tail "$output"
        fail "topsApp.py is on PATH but does not run (exit $status, output above)." \
            "Rebuild the image: ./run_docker.sh --rebuild"
    fi
}

main_script=$code_dir/main_parallel.py
[ -f "$main_script" ] || fail "$main_script is missing: is ./code mounted from the project folder?"
check_data_dir
ensure_home
check_isce
exec python "$main_script" "$@"
