#!/bin/bash
# Builds the NEON kernels with a cross compiler and runs neon_check.c under qemu-aarch64 (x86-64 hosts):
#   apt-get install gcc-aarch64-linux-gnu qemu-user     then   Benchmarks/neon-check/check.sh
# Also compiles the kernel file with clang for aarch64 when clang is there (the compiler SwiftPM uses).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/CMoECPUKernels"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
if command -v clang >/dev/null; then
    clang --target=aarch64-linux-gnu --sysroot=/usr/aarch64-linux-gnu -O2 -Wall -Wextra -c \
        -I "$kernels/include" "$kernels/neon_fp32.c" -o "$out/neon_clang.o"
    echo "clang (aarch64): neon_fp32.c compiles"
fi
aarch64-linux-gnu-gcc -O2 -Wall -Wextra -static -I "$kernels/include" \
    "$kernels/neon_fp32.c" "$here/neon_check.c" -lm -o "$out/neon_check"
qemu-aarch64 "$out/neon_check"
