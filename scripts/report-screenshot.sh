#!/usr/bin/env bash
# Renders a run's report.html (or any HTML page) with headless Chromium to a PNG.
#   scripts/report-screenshot.sh RUN_DIR_OR_HTML [OUT.png] [WIDTH] [HEIGHT]
# Default OUT: <run>/report.png; the page is shot at WIDTH x HEIGHT CSS pixels (default
# 1320 x 2400; pass a larger HEIGHT for long reports). Installs Debian's Chromium headless
# shell when no Chromium is found (needs root or sudo and the Debian archive).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 RUN_DIR_OR_HTML [OUT.png] [WIDTH] [HEIGHT]" >&2
    exit 2
fi
target=$1
if [[ -d $target ]]; then
    page="$target/report.html"
    default_out="$target/report.png"
else
    page=$target
    default_out="${target%.html}.png"
fi
out=${2:-$default_out}
width=${3:-1320}
height=${4:-2400}
if [[ ! -f $page ]]; then
    echo "error: $page not found (train the run, or run 'diffuse report RUN' first)" >&2
    exit 1
fi

find_chromium() {
    for c in chromium-headless-shell chromium chromium-browser google-chrome; do
        if command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if ! browser=$(find_chromium); then
    echo "no Chromium found; installing Debian's chromium-headless-shell" >&2
    sudo_cmd=""
    if [[ $(id -u) -ne 0 ]]; then
        sudo_cmd="sudo"
    fi
    $sudo_cmd apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q chromium-headless-shell >&2
    browser=$(find_chromium)
fi

abs_page=$(realpath "$page")
abs_out=$(realpath -m "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
headless_flag="--headless"
if [[ $browser != chromium-headless-shell ]]; then
    headless_flag="--headless=new"
fi
# No network is needed or allowed: the page is self-contained.
"$browser" "$headless_flag" --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --no-first-run --disable-extensions \
    --window-size="$width,$height" --screenshot="$abs_out" \
    "file://$abs_page" >/dev/null 2>"$profile/chromium.log" || {
    cat "$profile/chromium.log" >&2
    exit 1
}
echo "wrote $abs_out"
