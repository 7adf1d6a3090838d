#!/usr/bin/env bash
# Builds the static release `moe`, checks that the kernels embedded in it are the ones in Sources/MoECUDA/Kernels
# (SwiftPM embeds them when the build starts; an edit during a build leaves stale copies), strips and compresses
# it, and puts it with the device scripts into DEST (default /work/main/.device), which the device tool carries.
#   usage: scripts/gpu/bundle.sh [DEST]
set -euo pipefail
top=$(git rev-parse --show-toplevel); cd "$top"
dest=${1:-/work/main/.device}
if ! swift build -c release --static-swift-stdlib --product moe > /tmp/bundle-build.log 2>&1; then
    grep -E "error" /tmp/bundle-build.log; echo "the build failed: not bundling an old binary" >&2; exit 1
fi
grep -E "Build of" /tmp/bundle-build.log
bin=.build/release/moe
python3 - "$bin" Sources/MoECUDA/Kernels/* <<'PY'
import sys
binary = open(sys.argv[1], 'rb').read()
stale = [f for f in sys.argv[2:] if open(f, 'rb').read() not in binary]
if stale:
    sys.exit("stale embedded kernels (rebuild): " + ", ".join(stale))
print("embedded kernels match the sources")
PY
mkdir -p "$dest"
strip -o "$dest/moe" "$bin"
rm -f "$dest/moe.xz"
xz -T2 -6 "$dest/moe"
cp scripts/gpu/device-check.sh scripts/gpu/ep-check.sh scripts/gpu/pending.sh scripts/gpu/ncu_kernels.py scripts/serve_load.py "$dest/"
git rev-parse --short HEAD > "$dest/COMMIT"
git diff --quiet || echo "dirty" >> "$dest/COMMIT"
du -sh "$dest"; ls -la "$dest"
