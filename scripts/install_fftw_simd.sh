#!/usr/bin/env bash
# Rebuild pyfftw from source against a system (or given) FFTW instead of the
# copy bundled in the PyPI wheel.  See --help.
set -euo pipefail

PROG=$(basename "$0")
PYTHON=${PYTHON:-python}
FFTW_PREFIX=${FFTW_PREFIX:-}
PYFFTW_VERSION=""
FORCE=0
CHECK_ONLY=0
DEFAULT_PYFFTW_VERSION=0.15.1

usage() {
    cat <<EOF
Usage: $PROG [options]

Rebuild pyfftw from source in the current Python environment so that it links
a separately installed FFTW 3 library instead of the copy bundled in the PyPI
wheel (pyfftw.libs/, FFTW 3.3.5 built with SSE2/AVX codelets).

Steps:
  1. Install FFTW 3 headers and libraries (Debian/Ubuntu: apt-get install
     libfftw3-dev), unless --fftw-prefix is given or they are already there.
  2. pip install --force-reinstall --no-binary pyfftw --no-deps pyfftw==VER
     (VER = the pyfftw version currently installed, or --pyfftw-version).
     Build isolation fetches setuptools/Cython/numpy; a C compiler and the
     Python headers are needed.
  3. Check with ldd that the rebuilt extension links the intended libfftw3f,
     and print its path and the SIMD set it was compiled with.

The script is idempotent: if pyfftw already links the intended library it
does nothing (use --force to rebuild anyway).

NOTE: Debian 12's libfftw3 (3.3.10-1; debian/rules configures amd64 with
--enable-sse/--enable-sse2 --enable-avx only) has no AVX2/FMA codelets: its
version string reads fftw-3.3.10-sse2-avx, the same SIMD set as the wheel's
FFTW 3.3.5.  Check what you have with --check.
For AVX2/FMA build FFTW yourself, e.g.
  ./configure --prefix=\$HOME/fftw-avx2 --enable-single --enable-sse2 \\
      --enable-avx --enable-avx2 --enable-fma --enable-shared --enable-openmp
  make -j && make install
and pass --fftw-prefix \$HOME/fftw-avx2 (only single precision needs to be
there; the double/long libraries are then taken from the system).

Options:
  --python PY           Python interpreter of the target environment
                        (default: \$PYTHON or 'python')
  --pyfftw-version V    pyfftw version to build (default: the installed one,
                        else $DEFAULT_PYFFTW_VERSION)
  --fftw-prefix DIR     use FFTW from DIR/include and DIR/lib instead of the
                        system packages (skips apt-get; adds an rpath)
  --force               rebuild even if pyfftw already links the target FFTW
  --check               only report which libfftw3f pyfftw links; change nothing
  -h, --help            show this help

Other platforms:
  conda:    conda install -c conda-forge fftw
            then: $PROG --fftw-prefix "\$CONDA_PREFIX"
  Homebrew: brew install fftw
            then: $PROG --fftw-prefix "\$(brew --prefix fftw)"
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
info() { echo "$PROG: $*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --python) [[ $# -ge 2 ]] || die "--python needs an argument"; PYTHON=$2; shift 2 ;;
        --pyfftw-version) [[ $# -ge 2 ]] || die "--pyfftw-version needs an argument"; PYFFTW_VERSION=$2; shift 2 ;;
        --fftw-prefix) [[ $# -ge 2 ]] || die "--fftw-prefix needs an argument"; FFTW_PREFIX=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --check) CHECK_ONLY=1; shift ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (use --python)"
PYTHON=$(command -v "$PYTHON")
# absolute, but without resolving symlinks (a venv's python is a symlink)
[[ "$PYTHON" == /* ]] || PYTHON="$PWD/$PYTHON"
command -v ldd >/dev/null 2>&1 || die "ldd not found (this script supports Linux only; on macOS use otool -L)"

# ---------------------------------------------------------------- helpers
is_debian_like() {
    [[ -r /etc/os-release ]] || return 1
    local id id_like
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    id_like=$(. /etc/os-release && echo "${ID_LIKE:-}")
    [[ "$id" == debian || "$id" == ubuntu || " $id_like " == *" debian "* || " $id_like " == *" ubuntu "* ]]
}

multiarch_libdir() {
    local ma=""
    if command -v dpkg-architecture >/dev/null 2>&1; then
        ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)
    fi
    if [[ -z "$ma" ]] && command -v gcc >/dev/null 2>&1; then
        ma=$(gcc -print-multiarch 2>/dev/null || true)
    fi
    if [[ -n "$ma" && -d "/usr/lib/$ma" ]]; then echo "/usr/lib/$ma"; else echo "/usr/lib"; fi
}

# Path of the compiled pyfftw extension, or empty if pyfftw is not importable.
pyfftw_extension() {
    (cd / && "$PYTHON" - <<'EOF') 2>/dev/null || true
import pyfftw.pyfftw as m
print(m.__file__)
EOF
}

installed_pyfftw_version() {
    (cd / && "$PYTHON" - <<'EOF') 2>/dev/null || true
import importlib.metadata as md
try:
    print(md.version("pyfftw"))
except md.PackageNotFoundError:
    pass
EOF
}

# The libfftw3f that the extension resolves to (absolute path), or empty.
linked_fftw3f() {
    local ext=$1
    ldd "$ext" 2>/dev/null | awk '$1 ~ /^libfftw3f(-[0-9a-f]+)?\.so/ {print $3; exit}'
}

simd_string() {
    # FFTW embeds its version followed by the SIMD sets it was configured with,
    # e.g. "fftw-3.3.10-sse2-avx"; a build without SIMD has just "fftw-3.3.10".
    grep -a -o 'fftw-3\.[0-9]*\.[0-9]*\(-[a-z0-9_-]*\)\{0,1\}' "$1" 2>/dev/null \
        | awk '{ if (length($0) > length(best)) best = $0 } END { print best }' || true
}

report() {
    local ext lib real simd
    ext=$(pyfftw_extension)
    if [[ -z "$ext" ]]; then info "pyfftw is not importable with $PYTHON"; return 1; fi
    lib=$(linked_fftw3f "$ext")
    if [[ -z "$lib" || "$lib" == "not" ]]; then info "could not resolve libfftw3f for $ext"; return 1; fi
    real=$(readlink -f "$lib")
    simd=$(simd_string "$real")
    info "pyfftw extension: $ext"
    info "links libfftw3f:  $lib -> $real"
    info "FFTW build:       ${simd:-unknown (no SIMD string found)}"
    if [[ "$real" == */pyfftw.libs/* ]]; then
        info "(this is the copy bundled in the PyPI wheel)"
    fi
    info "CPU SIMD:         $(grep -o -w 'sse2\|avx\|avx2\|fma\|avx512f' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')"
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null && [[ "$simd" != *avx2* ]]; then
        info "note: the CPU has AVX2/FMA but this FFTW has no AVX2 codelets"
    fi
}

if [[ $CHECK_ONLY -eq 1 ]]; then
    report
    exit $?
fi

# ---------------------------------------------------------------- 1. FFTW
if [[ -n "$FFTW_PREFIX" ]]; then
    [[ -d "$FFTW_PREFIX" ]] || die "--fftw-prefix $FFTW_PREFIX is not a directory"
    FFTW_PREFIX=$(cd "$FFTW_PREFIX" && pwd)
    FFTW_INC="$FFTW_PREFIX/include"
    FFTW_LIB=""
    for d in "$FFTW_PREFIX/lib" "$FFTW_PREFIX/lib64" "$FFTW_PREFIX/lib/$(gcc -print-multiarch 2>/dev/null || true)"; do
        if ls "$d"/libfftw3f.so* >/dev/null 2>&1; then FFTW_LIB=$d; break; fi
    done
    [[ -f "$FFTW_INC/fftw3.h" ]] || die "$FFTW_INC/fftw3.h not found"
    [[ -n "$FFTW_LIB" ]] || die "no shared libfftw3f under $FFTW_PREFIX/lib* (configure FFTW with --enable-single --enable-shared)"
    info "using FFTW from $FFTW_PREFIX"
else
    FFTW_INC=/usr/include
    FFTW_LIB=$(multiarch_libdir)
    if [[ -f "$FFTW_INC/fftw3.h" ]] && ls "$FFTW_LIB"/libfftw3f.so* >/dev/null 2>&1; then
        info "FFTW headers and libfftw3f already present in $FFTW_LIB"
    elif is_debian_like; then
        SUDO=""
        if [[ $(id -u) -ne 0 ]]; then
            if command -v sudo >/dev/null 2>&1; then
                SUDO="sudo"
                info "not root: using sudo for apt-get"
            else
                die "libfftw3-dev is not installed and you are not root.
  Run as root:  apt-get update && apt-get install -y libfftw3-dev
  then re-run $PROG."
            fi
        fi
        info "installing libfftw3-dev with apt-get"
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y libfftw3-dev
    else
        die "this does not look like Debian/Ubuntu and no FFTW was found in /usr.
  conda:    conda install -c conda-forge fftw   then  $PROG --fftw-prefix \"\$CONDA_PREFIX\"
  Homebrew: brew install fftw                  then  $PROG --fftw-prefix \"\$(brew --prefix fftw)\"
  Fedora:   dnf install fftw-devel             then  $PROG --fftw-prefix /usr
  or build FFTW yourself and pass --fftw-prefix DIR"
    fi
    [[ -f "$FFTW_INC/fftw3.h" ]] || die "$FFTW_INC/fftw3.h still missing after install"
fi
TARGET_LIB_REAL=""
for f in "$FFTW_LIB"/libfftw3f.so*; do
    [[ -e "$f" ]] && { TARGET_LIB_REAL=$(readlink -f "$f"); break; }
done
[[ -n "$TARGET_LIB_REAL" ]] || die "no libfftw3f.so in $FFTW_LIB"

# ---------------------------------------------------------------- 2. pyfftw
INSTALLED=$(installed_pyfftw_version)
if [[ -z "$PYFFTW_VERSION" ]]; then
    PYFFTW_VERSION=${INSTALLED:-$DEFAULT_PYFFTW_VERSION}
fi

EXT=$(pyfftw_extension)
if [[ -n "$EXT" && $FORCE -eq 0 && "$INSTALLED" == "$PYFFTW_VERSION" ]]; then
    CUR=$(linked_fftw3f "$EXT")
    if [[ -n "$CUR" && "$(readlink -f "$CUR")" == "$TARGET_LIB_REAL" ]]; then
        info "pyfftw $INSTALLED already links $CUR; nothing to do (use --force to rebuild)"
        report
        exit 0
    fi
fi

command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || \
    die "no C compiler found (Debian/Ubuntu: apt-get install -y gcc)"
PYINC=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[[ -f "$PYINC/Python.h" ]] || die "Python headers not found in $PYINC (Debian/Ubuntu: apt-get install -y python3-dev)"

info "building pyfftw $PYFFTW_VERSION from source against $FFTW_LIB (installed: ${INSTALLED:-none})"
export PYFFTW_INCLUDE="$FFTW_INC"
export PYFFTW_LIB_DIR="$FFTW_LIB"
if [[ -n "$FFTW_PREFIX" ]]; then
    # Make the extension find the non-system library at run time.  (Do not
    # set CFLAGS here: setuptools then drops Python's own "-DNDEBUG -O3
    # -fwrapv" flags, and the resulting pyfftw segfaults on import.)
    export LDFLAGS="${LDFLAGS:+$LDFLAGS }-Wl,-rpath,$FFTW_LIB"
fi
if ! "$PYTHON" -m pip install --force-reinstall --no-binary pyfftw --no-deps \
        --no-cache-dir "pyfftw==$PYFFTW_VERSION"; then
    die "pip failed to build pyfftw $PYFFTW_VERSION.
  If pip refused with 'externally-managed-environment', use a virtual environment
  (python -m venv ...), or pass PIP_BREAK_SYSTEM_PACKAGES=1 if you really mean it."
fi

# ---------------------------------------------------------------- 3. verify
EXT=$(pyfftw_extension)
[[ -n "$EXT" ]] || die "pyfftw does not import after the rebuild"
CUR=$(linked_fftw3f "$EXT")
[[ -n "$CUR" ]] || die "ldd shows no libfftw3f for $EXT"
if [[ "$(readlink -f "$CUR")" != "$TARGET_LIB_REAL" ]]; then
    ldd "$EXT" | grep -i fftw >&2 || true
    die "pyfftw links $CUR, expected $TARGET_LIB_REAL"
fi
"$PYTHON" - <<'EOF' || die "pyfftw smoke test failed"
import numpy as np, pyfftw
a = pyfftw.empty_aligned((8, 8, 8), dtype="float32")
a[...] = np.arange(a.size, dtype="float32").reshape(a.shape)
b = pyfftw.builders.rfftn(a.copy())()
assert np.allclose(b, np.fft.rfftn(a), rtol=1e-4, atol=1e-2)
EOF
info "ok: pyfftw $PYFFTW_VERSION rebuilt and verified"
report
