#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine,
# builds the workspace and runs every test (unit, property, integration and
# end-to-end with real programs), plus the format and lint gates.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-debian.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

echo "== cargo build --release"
cargo build --workspace --release

echo "== cargo test"
cargo test --workspace --release --no-fail-fast -- --test-threads="${VIRTUOS_TEST_THREADS:-2}"
