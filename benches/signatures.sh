#!/usr/bin/env bash
# Every signing figure in one command: the local (OpenSSL-backed) signer's signatures per second
# beside `openssl speed rsa2048` on this machine, then the latency of signing through LocalStack
# KMS (the production path). Starts the local emulators if needed and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== local signer vs openssl speed (one core)"
cargo bench -q -p pec-smime --bench sign
echo
echo "== KMS (LocalStack) latency"
cargo bench -q -p pec-integration --bench kms
