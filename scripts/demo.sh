#!/usr/bin/env bash
# The main job: installs what it needs, builds virtuos and runs the demo:
# unmodified programs whose file calls are served by the storage domain, with
# what that costs against native. Uses throw-away directories; needs no
# configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh
cargo build --workspace --release
exec target/release/virtuos demo "$@"
