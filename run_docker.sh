#!/usr/bin/env bash
# Run the pipeline in Docker, in one command:   ./run_docker.sh [--rebuild] [COMMAND] [OPTIONS]
# COMMAND and OPTIONS are those of `python code/main_parallel.py` (run, plan, status ...).
#
# - Checks that Docker is installed and its engine running.
# - Builds the image when it is missing, when Dockerfile or environment.yml changed (their
#   content hash is an image label), or when --rebuild is given.
# - Runs the pipeline as you (your UID:GID, so its outputs are yours) with the data folder at
#   /data, ./code (edits need no rebuild), pairs.txt and .env mounted. Paths given with --data,
#   --pairs, --env (and the `pairs` command's --output) are mounted in their place.
# - Exits with the pipeline's exit code; Ctrl-C reaches the pipeline, which saves its state.
#
# Its own settings, from the environment, else from .env: IMAGE_NAME (insar-pipeline:latest),
# MEMORY_LIMIT (docker --memory, e.g. 32g; unset: no limit), SHM_SIZE (/dev/shm size, 2g).
# Variables named in .env or .env.example that are set in your environment are passed on, so
# `WORKERS=2 ./run_docker.sh` works as it does without Docker.
# Written for bash 3.2 too (macOS): no associative arrays, guarded empty-array expansions.
set -euo pipefail

readonly HASH_LABEL=org.insar-pipeline.build-hash
# conda-forge builds ISCE2 for linux-64 only; Docker Desktop emulates it on Apple silicon.
readonly PLATFORM=linux/amd64
readonly APP=/app                       # the image's WORKDIR: the pipeline's ./
readonly PAIRS_FOLDER=$APP/pairs-folder # where the `pairs` command writes its pairs file
readonly SIZE_RE='^([0-9]+(\.[0-9]+)?) ?([kKmMgGtT]?)[iI]?[bB]?$'

project=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

say() { printf 'run_docker.sh: %s\n' "$@" >&2; }
die() {
    say "$@"
    exit 2
}

# Absolute, symlink-free path of a file or folder whose parent folder exists.
abs_path() {
    local path=$1 dir
    if [ -d "$path" ]; then
        (cd "$path" && pwd -P)
        return
    fi
    case $path in
        */*) dir=${path%/*} ;;
        *) dir=. ;;
    esac
    dir=$(cd "${dir:-/}" 2> /dev/null && pwd -P) || die "$path: its folder does not exist."
    printf '%s/%s\n' "${dir%/}" "${path##*/}"
}

# ---- .env, read exactly as python-dotenv 1.x reads it (the pipeline's own reader) ------------
# A port of python-dotenv's parser (dotenv/parser.py) and its ${VAR} / ${VAR:-default}
# interpolation (dotenv/variables.py, dotenv_values' override=True): `KEY = value  # comment`,
# `KEY = # comment` (empty), `KEY=#value`, quotes with their escapes and line breaks, `export`,
# CRLF line ends, a leading BOM. A line it cannot parse is skipped, as python-dotenv skips it (the
# pipeline then reports it by line). tests/test_run_docker_dotenv.py compares the two line by line.
# Results: dotenv_keys[i] / dotenv_vals[i] in file order; dotenv_set[i] is 0 for a bare `KEY`.
readonly DOTENV_CR=$'\r' DOTENV_NL=$'\n' DOTENV_HS=$' \t\f\v'

dotenv_take() { # REGEX: match at the start of $text, drop what matched; BASH_REMATCH kept
    [[ $text =~ $1 ]] || return 1
    text=${text:${#BASH_REMATCH[0]}}
}

dotenv_unescape() { # KIND STRING: python-dotenv's decode_escapes for ' or " values
    local kind=$1 rest=$2 out="" char backslash="\\"
    while [ -n "$rest" ]; do
        char=${rest:0:1}
        if [ "$char" != "$backslash" ] || [ ${#rest} -lt 2 ]; then
            out+=$char
            rest=${rest:1}
            continue
        fi
        char=${rest:1:1}
        rest=${rest:2}
        case $kind:$char in
            *:"$backslash" | *:"'" | '":"') out+=$char ;;
            '":a') out+=$'\a' ;;
            '":b') out+=$'\b' ;;
            '":f') out+=$'\f' ;;
            '":n') out+=$'\n' ;;
            '":r') out+=$'\r' ;;
            '":t') out+=$'\t' ;;
            '":v') out+=$'\v' ;;
            *) out+=$backslash$char ;;
        esac
    done
    printf '%s' "$out"
}

dotenv_binding() { # one binding from $text; returns 1 on a parse error
    local key value set=1 part
    dotenv_take "^export[$DOTENV_HS]+" || true
    case ${text:0:1} in
        '#') key="" ;;
        "'") dotenv_take "^'([^']+)'" || return 1; key=${BASH_REMATCH[1]} ;;
        *) dotenv_take "^([^=#[:space:]]+)" || return 1; key=${BASH_REMATCH[1]} ;;
    esac
    dotenv_take "^[$DOTENV_HS]*" || true
    if [ "${text:0:1}" = "=" ]; then
        dotenv_take "^=[$DOTENV_HS]*"
        if [ ${#BASH_REMATCH[0]} -gt 1 ] && [ "${text:0:1}" = "#" ]; then
            value=""
        else
            case ${text:0:1} in
                "'")
                    dotenv_take "^'((\\\\.|[^'\\\\])*)'" || return 1
                    value=$(dotenv_unescape "'" "${BASH_REMATCH[1]}"; printf x)
                    value=${value%x}
                    ;;
                '"')
                    dotenv_take '^"((\\.|[^"\\])*)"' || return 1
                    value=$(dotenv_unescape '"' "${BASH_REMATCH[1]}"; printf x)
                    value=${value%x}
                    ;;
                "" | "$DOTENV_NL" | "$DOTENV_CR") value="" ;;
                *)
                    dotenv_take "^[^$DOTENV_CR$DOTENV_NL]*"
                    part=${BASH_REMATCH[0]}
                    # re.sub(r"\s+#.*", "", part).rstrip()
                    if [[ $part =~ [[:space:]]+#.*$ ]]; then part=${part%"${BASH_REMATCH[0]}"}; fi
                    value=${part%"${part##*[![:space:]]}"}
                    ;;
            esac
        fi
    else
        value="" set=0
    fi
    dotenv_take "^([$DOTENV_HS]*#[^$DOTENV_CR$DOTENV_NL]*)?" || true
    dotenv_take "^[$DOTENV_HS]*($DOTENV_CR$DOTENV_NL|$DOTENV_NL|$DOTENV_CR|\$)" || return 1
    if [ -n "$key" ]; then
        dotenv_keys+=("$key")
        dotenv_vals+=("$value")
        dotenv_set+=("$set")
    fi
}

dotenv_lookup() { # NAME: the value an interpolation sees (the file's own values first)
    local i=${#dotenv_keys[@]}
    while [ "$i" -gt 0 ]; do
        i=$((i - 1))
        if [ "${dotenv_keys[$i]}" = "$1" ]; then
            printf '%s' "${dotenv_vals[$i]}"
            return 0
        fi
    done
    local found
    found=$(printenv "$1" 2> /dev/null && printf x) || return 1
    found=${found%x}
    printf '%s' "${found%"$DOTENV_NL"}"
}

dotenv_interpolate() { # STRING: ${NAME} and ${NAME:-default} expanded, as python-dotenv does
    local rest=$1 out="" found re='\$\{([^}:]*)(:-([^}]*))?\}'
    while [[ $rest =~ $re ]]; do
        out+=${rest%%"${BASH_REMATCH[0]}"*}
        rest=${rest#*"${BASH_REMATCH[0]}"}
        found=$(dotenv_lookup "${BASH_REMATCH[1]}" && printf x) || true
        if [ -n "$found" ]; then out+=${found%x}; else out+=${BASH_REMATCH[3]}; fi
    done
    printf '%s' "$out$rest"
}

dotenv_load() { # FILE: fill dotenv_keys / dotenv_vals / dotenv_set
    local text resolved i=0 count
    dotenv_keys=() dotenv_vals=() dotenv_set=()
    [ -f "$1" ] || return 0
    text=$(cat "$1" && printf x) || die "$1: cannot read it."
    text=${text%x}
    text=${text#$'\xef\xbb\xbf'}
    while :; do
        dotenv_take '^[[:space:]]*' || true
        [ -n "$text" ] || break
        if ! dotenv_binding; then
            dotenv_take "^[^$DOTENV_CR$DOTENV_NL]*($DOTENV_CR|$DOTENV_NL|$DOTENV_CR$DOTENV_NL)?" || true
        fi
    done
    # Interpolation runs in file order and sees the values resolved before it.
    local parsed_keys=("${dotenv_keys[@]+"${dotenv_keys[@]}"}")
    local parsed_vals=("${dotenv_vals[@]+"${dotenv_vals[@]}"}")
    count=${#parsed_keys[@]}
    dotenv_keys=() dotenv_vals=()
    while [ "$i" -lt "$count" ]; do
        resolved=$(dotenv_interpolate "${parsed_vals[$i]}"; printf x)
        dotenv_keys+=("${parsed_keys[$i]}")
        dotenv_vals+=("${resolved%x}")
        i=$((i + 1))
    done
}

# The keys of the loaded .env file, one per line.
env_file_keys() {
    local key
    for key in "${dotenv_keys[@]+"${dotenv_keys[@]}"}"; do printf '%s\n' "$key"; done
}

# The value of KEY in the loaded .env file (the last binding wins; none: empty).
env_file_value() {
    local i=${#dotenv_keys[@]}
    while [ "$i" -gt 0 ]; do
        i=$((i - 1))
        if [ "${dotenv_keys[$i]}" = "$1" ]; then
            printf '%s\n' "${dotenv_vals[$i]}"
            return 0
        fi
    done
    printf '\n'
}

in_environment() { printenv "$1" > /dev/null 2>&1; }

# A setting of this script: the environment first, then the .env file, then the default.
setting() {
    local key=$1 default=$2 value
    if in_environment "$key"; then
        value=$(printenv "$key")
    else
        value=$(env_file_value "$key")
    fi
    printf '%s\n' "${value:-$default}"
}

# A docker size (32g, 1.5GiB, 512m) in GiB, for the pipeline's memory budget: inside a
# container it would otherwise plan with the host's RAM, not with the limit.
size_in_gib() {
    [[ $1 =~ $SIZE_RE ]] || return 1
    local power
    case ${BASH_REMATCH[3]} in
        k | K) power=1 ;;
        m | M) power=2 ;;
        g | G) power=3 ;;
        t | T) power=4 ;;
        *) power=0 ;;
    esac
    awk -v n="${BASH_REMATCH[1]}" -v p="$power" 'BEGIN { printf "%g\n", n * 1024 ^ (p - 3) }'
}

sha256() {
    if command -v sha256sum > /dev/null 2>&1; then sha256sum; else shasum -a 256; fi
}

# The project's address for the image's source label, without the credentials a remote URL
# may carry (https://user:token@host/...).
source_url() {
    command -v git > /dev/null 2>&1 || return 0
    local url
    url=$(git -C "$project" remote get-url origin 2> /dev/null) || return 0
    if [[ $url =~ ^([A-Za-z+]+://)[^/@]*@(.*)$ ]]; then
        url=${BASH_REMATCH[1]}${BASH_REMATCH[2]}
    fi
    printf '%s\n' "$url"
}

add_mount() { # SOURCE TARGET [readonly]
    case $1 in *,*) die "$1: docker --mount cannot take a path with a comma; rename it." ;; esac
    run_args+=(--mount "type=bind,source=$1,target=$2${3:+,$3}")
}

check_docker() {
    command -v docker > /dev/null 2>&1 \
        || die "Docker is not installed (no docker command on PATH)." \
            "Install Docker Engine (Linux) or Docker Desktop (macOS, Windows with WSL2):" \
            "https://docs.docker.com/get-docker/"
    if ! docker_info=$(docker info --format '{{json .SecurityOptions}}' 2>&1); then
        case $docker_info in
            *"permission denied"*)
                die "Docker is running but this user may not use it (permission denied)." \
                    "On Linux: sudo usermod -aG docker \"\$USER\", then log out and in again." ;;
        esac
        die "Docker is installed but its engine is not running (docker info failed)." \
            "Start Docker Desktop, or on Linux: sudo systemctl start docker"
    fi
}

build_if_needed() {
    local hash current reason="" url
    hash=$(cat "$project/Dockerfile" "$project/environment.yml" | sha256)
    hash=${hash%% *}
    current=$(docker image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" \
        "$image" 2> /dev/null) || current=""
    if $rebuild; then
        reason="--rebuild"
    elif [ -z "$current" ]; then
        reason="there is no image $image yet"
    elif [ "$current" != "$hash" ]; then
        reason="Dockerfile or environment.yml changed"
    fi
    [ -n "$reason" ] || return 0
    say "building $image ($reason): the first build installs ISCE2 and takes a while."
    local build_args=(build --platform "$PLATFORM" --label "$HASH_LABEL=$hash" --tag "$image"
        --file "$project/Dockerfile")
    url=$(source_url)
    if [ -n "$url" ]; then build_args+=(--build-arg "SOURCE_URL=$url"); fi
    docker "${build_args[@]}" "$project" \
        || die "docker build failed (its output is above); nothing was run."
}

main() {
    # The command line: our own --rebuild, then main_parallel.py's arguments with each path (--data,
    # --pairs, --env, and the `pairs` command's --output) swapped for where it is mounted. The pairs
    # file is mounted read-only at ./pairs.txt; the file the `pairs` command writes (its --output,
    # else --pairs) is written atomically beside itself, so its folder is mounted instead.
    rebuild=false
    if [ "${1:-}" = --rebuild ]; then
        rebuild=true
        shift
    fi
    command=run
    if [ $# -gt 0 ]; then
        case $1 in -*) ;; *) command=$1 ;; esac
    fi
    writes_pairs=false
    if [ "$command" = pairs ]; then
        writes_pairs=true
        for argument in "$@"; do
            case $argument in --output | --output=*) writes_pairs=false ;; esac
        done
    fi
    data_dir=$project/data
    pairs_file=$project/pairs.txt
    env_file=$project/.env
    output_file=""
    pairs_given=false
    pipeline_args=()
    while [ $# -gt 0 ]; do
        option=$1
        case $option in
            --data | --pairs | --env | --output)
                [ $# -ge 2 ] || die "$option needs a value."
                value=$2
                shift 2
                ;;
            --data=* | --pairs=* | --env=* | --output=*)
                value=${option#*=}
                option=${option%%=*}
                shift
                ;;
            *)
                pipeline_args+=("$option")
                shift
                continue
                ;;
        esac
        [ -n "$value" ] || die "$option needs a value."
        case $option in
            --data)
                data_dir=$value
                pipeline_args+=(--data /data)
                ;;
            --env)
                env_file=$value
                pipeline_args+=(--env "$APP/.env")
                ;;
            --pairs)
                pairs_file=$value
                pairs_given=true
                if $writes_pairs; then
                    pipeline_args+=(--pairs "$PAIRS_FOLDER/${value##*/}")
                else
                    pipeline_args+=(--pairs "$APP/pairs.txt")
                fi
                ;;
            --output)
                if [ "$command" = pairs ]; then
                    output_file=$value
                    value=$PAIRS_FOLDER/${value##*/}
                fi
                pipeline_args+=(--output "$value")
                ;;
        esac
    done
    if $writes_pairs; then
        output_file=$pairs_file
        if ! $pairs_given; then pipeline_args+=(--pairs "$PAIRS_FOLDER/${pairs_file##*/}"); fi
    fi
    pairs_file=$(abs_path "$pairs_file")
    if [ -n "$output_file" ]; then output_file=$(abs_path "$output_file"); fi

    [ -f "$env_file" ] || die "$env_file not found: the pipeline's settings live there." \
        "Create it from the example and fill in your OPENTOPO_API_KEY:  cp .env.example .env"
    env_file=$(abs_path "$env_file")
    [ -d "$data_dir" ] || die "$data_dir: no such data folder. Create it and put your Sentinel-1" \
        "products in its raw/ folder:  mkdir -p data/raw"
    data_dir=$(abs_path "$data_dir")
    [ -d "$project/code" ] || die "$project/code not found: run_docker.sh runs from its project folder."

    dotenv_load "$env_file"
    image=$(setting IMAGE_NAME insar-pipeline:latest)
    shm_size=$(setting SHM_SIZE 2g)
    memory_limit=$(setting MEMORY_LIMIT "")
    [[ $shm_size =~ $SIZE_RE ]] || die "SHM_SIZE=$shm_size is not a size such as 2g or 512m."
    if [ -n "$memory_limit" ]; then
        memory_gib=$(size_in_gib "$memory_limit") \
            || die "MEMORY_LIMIT=$memory_limit is not a size such as 32g or 16384m (or leave it unset)."
    fi

    check_docker
    # Rootless Docker maps the container's root to you, and any other UID to a subordinate one:
    # there, root in the container is what keeps the outputs yours.
    case $docker_info in
        *rootless*) user=0:0 ;;
        *) user=$(id -u):$(id -g) ;;
    esac
    build_if_needed

    run_args=(run --rm --init --platform "$PLATFORM" --user "$user" --shm-size "$shm_size"
        --stop-timeout 60)
    # -it only on a terminal: with it, Ctrl-C goes to the pipeline through the terminal; without
    # it, docker forwards the signal itself.
    if [ -t 0 ] && [ -t 1 ]; then run_args+=(-it); fi
    forwarded=" "
    if [ -n "$memory_limit" ]; then
        run_args+=(--memory "$memory_limit")
        # Unless you set a number, the pipeline plans with the limit: inside the container it would
        # see the host's RAM.
        case $(setting MEMORY_TOTAL_GB auto) in
            auto | AUTO | Auto | none | None | NONE)
                run_args+=(--env "MEMORY_TOTAL_GB=$memory_gib")
                forwarded=" MEMORY_TOTAL_GB "
                ;;
        esac
    fi
    add_mount "$data_dir" /data
    add_mount "$project/code" "$APP/code" readonly
    add_mount "$env_file" "$APP/.env" readonly
    if [ -n "$output_file" ]; then add_mount "${output_file%/*}" "$PAIRS_FOLDER"; fi
    if ! $writes_pairs && [ -f "$pairs_file" ]; then
        add_mount "$pairs_file" "$APP/pairs.txt" readonly
    fi
    # `--env KEY` without a value: docker copies it from our environment, so no value (a key or a
    # password) ever shows on a command line.
    keys=$(env_file_keys)
    if [ -f "$project/.env.example" ]; then
        keys="$keys $(dotenv_load "$project/.env.example" && env_file_keys)"
    fi
    for key in $keys; do
        case " IMAGE_NAME SHM_SIZE MEMORY_LIMIT PATH HOME USER$forwarded" in *" $key "*) continue ;; esac
        if in_environment "$key"; then
            run_args+=(--env "$key")
            forwarded="$forwarded$key "
        fi
    done

    say "running \`${pipeline_args[*]:-run}\` in $image as user $user."
    exec docker "${run_args[@]}" "$image" ${pipeline_args[@]+"${pipeline_args[@]}"}
}

# Sourced (tests read its .env functions): define the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
