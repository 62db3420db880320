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

# The same end-to-end suites with the domains in QEMU VMs (Debian's cloud
# kernel, fetched and cached on first use; TCG where KVM does not work),
# and the fault matrix there.
echo "== end-to-end suites on the vm backend"
VIRTUOS_E2E_BACKEND=vm cargo test --release -p virtuos-e2e --no-fail-fast \
    --test coreutils --test python --test sqlite --test git --test fork_exec \
    --test network --test servers --test credentials --test unix_sockets --test errno \
    -- --test-threads="${VIRTUOS_TEST_THREADS:-2}"
# The POSIX conformance suite: in full on the process backend (above, in
# `cargo test --workspace`); on the vm backend a part of it fits CI's time
# (the whole suite there: `bash scripts/conformance.sh vm`, results in
# bench/conformance/).
VIRTUOS_E2E_BACKEND=vm VIRTUOS_CONFORMANCE_DIRS=chmod,mkdir,unlink \
    cargo test --release -p virtuos-e2e --no-fail-fast --test conformance
VIRTUOS_E2E_BACKEND=vm cargo test --release -p virtuos-e2e --no-fail-fast --test faults \
    -- --test-threads=1
