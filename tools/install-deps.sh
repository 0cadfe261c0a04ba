#!/usr/bin/env bash
# Installs the Debian 12 packages crisp builds and tests with, skipping those
# already present. Safe to run again.
set -euo pipefail

packages=(
  bazel-bootstrap g++ clang libclang-rt-14-dev
  libnghttp2-dev libssl-dev libc-ares-dev libyaml-cpp-dev libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libevent-dev libwslay-dev
  libhttp-parser-dev zlib1g-dev libprotobuf-dev protobuf-compiler libspdlog-dev
  kubectl openssl curl python3 procps util-linux
  containerd runc busybox-static containernetworking-plugins iproute2
  nlohmann-json3-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
