#!/usr/bin/env bash
# Installs what building diffuse needs on a fresh Debian machine with a Rust toolchain:
# fontconfig/freetype headers and a font for the plots (plotters' text rendering), and the
# Fashion-MNIST data set (installed in /usr/share/datasets/fashion-mnist; tests use only the
# slice in tests/fixtures/fashion-mnist); Mesa's software Vulkan driver (lavapipe), the GPU the
# `--features wgpu` tests run on when the machine has none.
set -euo pipefail
missing=()
for pkg in pkg-config libfontconfig1-dev libfreetype-dev fonts-dejavu-core dataset-fashion-mnist \
  mesa-vulkan-drivers; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
