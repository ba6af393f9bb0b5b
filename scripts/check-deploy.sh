#!/usr/bin/env bash
# Validates deploy/ offline (scripts/check_deploy.py says what), after installing its tools:
# kubernetes-validate, python-hcl2 and PyYAML from PyPI into .venv-services, and promtool from
# Debian's prometheus package, unpacked (not installed: no service is started) into
# .venv-services/prometheus. kubectl (for `kubectl kustomize`) must be on the machine.
# Runs after the build: the Nomad check asks the built binary which flags `tailrace run` has.
#   scripts/check-deploy.sh [path/to/tailrace]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-services
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0' 'python-hcl2==8.1.4' 'pyyaml==6.0.3'
fi
promtool="$PWD/$venv/prometheus/usr/bin/promtool"
if [ ! -x "$promtool" ]; then
  tmp="$(mktemp -d)" && chmod 0777 "$tmp"  # apt downloads as its own user
  (cd "$tmp" && apt-get download -q prometheus >/dev/null)
  dpkg-deb -x "$tmp"/prometheus_*.deb "$venv/prometheus"
  rm -rf "$tmp"
fi
command -v kubectl >/dev/null 2>&1 || { echo "check-deploy needs kubectl (kubectl kustomize renders the overlays): install kubectl >= 1.27" >&2; exit 1; }
exec "$venv/bin/python" scripts/check_deploy.py --tailrace "${1:-target/debug/tailrace}" \
  --promtool "$promtool" --kubernetes-validate "$venv/bin/kubernetes-validate"
