#!/usr/bin/env bash
# Prepares a Debian bookworm (or newer) machine for `cargo build --release --features cuda`
# with no access to GitHub: everything comes from Debian's archive (the mirror apt uses) and
# crates.io.
#
# Why: burn's CUDA backend pulls cubecl-cuda -> cubecl-llvm, whose build dependency
# tracel-llvm-bundler downloads an LLVM 23 bundle from GitHub unless its install prefix,
#   ${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4,
# already holds the marker `.tracel-llvm-installed`; it then links LLVM statically as
# `<prefix>/bin/llvm-config --link-static --libs/--system-libs/--libdir/--cxxflags` says.
# This script puts Debian's LLVM 22 (static libraries with the NVPTX target, plus Polly) there
# behind a small llvm-config wrapper. The LLVM->PTX compiler linked from it never runs: the
# crate's `cuda` feature selects cubecl-cuda's `cpp` (NVRTC) compiler, so the LLVM version
# (22 here, 23 expected by llvm-sys 231) does not matter at run time.
#
# LLVM 22 is taken from Debian trixie. It is *unpacked* into the prefix (apt-get download +
# dpkg-deb -x), not installed with dpkg: installing trixie's llvm-22-dev on bookworm would
# replace ~55 system packages (libc6 2.41, libstdc++6 14, openssl, ...). The unpacked archives
# reference glibc 2.38's __isoc23_strtol/strtoll/strtoull, which bookworm's glibc 2.36 lacks, so
# a 4-function compat archive forwarding them to strtol & co. is added to the link line.
#
# Run it as the user who runs cargo (the prefix is per user); sudo is used only for apt-get
# install, and only when not root. Safe to run again: it does nothing once everything is there.
# Settings (environment): DIFFUSE_LLVM_VERSION (22), DIFFUSE_LLVM_SUITE (trixie),
# DIFFUSE_DEBIAN_MIRROR (default: the mirror in this machine's apt sources).
set -euo pipefail

LLVM_READY=""
LLVM_VER="${DIFFUSE_LLVM_VERSION:-22}"
SUITE="${DIFFUSE_LLVM_SUITE:-trixie}"
# The Debian mirror this machine's apt already uses (its first "URIs:" / "deb" entry for the
# main archive), so the trixie download goes where bookworm's packages come from.
system_mirror() {
  { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'
  } 2>/dev/null | grep -E '/debian/?$' | head -n1 || true
}
MIRROR="${DIFFUSE_DEBIAN_MIRROR:-$(system_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"

DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}"
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$HOME/.local/share" ;; esac # `dirs` ignores a relative one
PREFIX="$DATA_DIR/tracel/tracel-llvm-23.1.0-4"
SENTINEL="$PREFIX/.tracel-llvm-installed"
STAMP="$PREFIX/.diffuse-llvm"
ROOT="$PREFIX/debian"                        # the unpacked .debs
REAL_LLVM="$ROOT/usr/lib/llvm-$LLVM_VER"
WANT="llvm-$LLVM_VER/$SUITE"

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# 1. Native (bookworm) packages: a C/C++ compiler for cubecl-llvm's shims and the -dev
#    packages of the system libraries `llvm-config --system-libs` names (-lz -lzstd -lxml2 -lz3).
missing=()
for pkg in g++ pkg-config zlib1g-dev libzstd-dev libxml2-dev libz3-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Already set up for this LLVM? (wrapper answers and the marker is there)
if [ -f "$SENTINEL" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] \
  && "$PREFIX/bin/llvm-config" --version >/dev/null 2>&1 \
  && [ -f "$REAL_LLVM/lib/libLLVMNVPTXCodeGen.a" ] && [ -f "$REAL_LLVM/lib/libPolly.a" ]; then
  echo "setup-cuda: LLVM $LLVM_VER from $SUITE already in $PREFIX"
  LLVM_READY=1
fi

if [ -z "${LLVM_READY:-}" ] && [ -f "$SENTINEL" ] && [ ! -f "$STAMP" ]; then
  echo "setup-cuda: $PREFIX already holds a tracel-llvm bundle (not ours); leaving it as it is"
  LLVM_READY=1
fi

if [ -z "${LLVM_READY:-}" ]; then
# 3. Download llvm-N (llvm-config), llvm-N-dev (headers, static libraries) and libpolly-N-dev
#    from $SUITE with a private apt state: the system's apt sources are not touched.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Sandbox::User=$(id -un)"
  -o "Debug::NoLocking=1")
echo "setup-cuda: fetching llvm-$LLVM_VER from $SUITE ($MIRROR)"
apt-get "${apt_opts[@]}" update -qq
(cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq \
  "llvm-$LLVM_VER/$SUITE" "llvm-$LLVM_VER-dev/$SUITE" "libpolly-$LLVM_VER-dev/$SUITE")

# 4. Unpack into a fresh prefix (a half-done earlier attempt is discarded).
rm -rf "$PREFIX"
mkdir -p "$ROOT" "$PREFIX/bin" "$PREFIX/lib"
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$ROOT"
done
(cd "$work/debs" && ls -1 *.deb) >"$PREFIX/debian-packages.txt"
[ -f "$REAL_LLVM/lib/libLLVMNVPTXCodeGen.a" ] || { echo "setup-cuda: no NVPTX target in $REAL_LLVM" >&2; exit 1; }

# 5. glibc compat archive (placed after the LLVM archives on the link line by the wrapper).
cat >"$PREFIX/lib/glibc_compat.c" <<'EOF'
/* glibc 2.38 maps strtol & co. to C23 variants (__isoc23_*, which also take a 0b prefix);
   LLVM archives built against it reference those names, older glibc lacks them. */
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
EOF
cc -O2 -fPIC -c "$PREFIX/lib/glibc_compat.c" -o "$PREFIX/lib/glibc_compat.o"
ar rcs "$REAL_LLVM/lib/libdiffuse_glibc_compat.a" "$PREFIX/lib/glibc_compat.o"

# 6. The llvm-config the bundler runs: Debian's, with absolute .so paths in --system-libs
#    (e.g. /usr/lib/x86_64-linux-gnu/libz3.so) turned into -l flags (the bundler would emit
#    `-l libz3` for them) and the compat archive appended to --libs.
cat >"$PREFIX/bin/llvm-config" <<EOF
#!/bin/sh
# Generated by diffuse's scripts/setup-cuda.sh: Debian LLVM $LLVM_VER ($SUITE) for tracel-llvm-bundler.
out=\$("$REAL_LLVM/bin/llvm-config" "\$@") || exit \$?
case " \$* " in
  *" --system-libs "*) out=\$(printf '%s\n' "\$out" | sed -E 's#(^| )/[^ ]*/lib([^ /]+)\\.so(\\.[0-9.]+)?#\\1-l\\2#g') ;;
  *" --libs "*) out="\$out -ldiffuse_glibc_compat" ;;
esac
printf '%s\n' "\$out"
EOF
chmod +x "$PREFIX/bin/llvm-config"
"$PREFIX/bin/llvm-config" --link-static --version >/dev/null

echo "$WANT" >"$STAMP"
touch "$SENTINEL"
echo "setup-cuda: LLVM $("$PREFIX/bin/llvm-config" --version) ($SUITE) ready in $PREFIX"
fi

# 7. The crates the cuda build needs (cubek-fft & co. are not in a CPU-only registry cache), so
#    that the build itself can run with --offline.
if command -v cargo >/dev/null 2>&1; then
  (cd "$(dirname "$0")/.." && cargo fetch -q)
fi
echo "setup-cuda: build with   CUDARC_CUDA_VERSION=12080 cargo build --release --features cuda"
