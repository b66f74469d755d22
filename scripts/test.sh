#!/usr/bin/env bash
# The whole test suite, the README's test command: installs the services the tests need when
# they are missing (Debian packages), then runs every test of the workspace, the browser tests
# included. A service that cannot be installed is an error here, never a silent skip.
#
# Plain `cargo test --workspace` runs the same suite but leaves the browser and NATS tests out
# (they show as "ignored" in its summary, with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > /dev/null
}

# The dashboard's browser tests drive Debian's Chromium through chromedriver.
if ! command -v chromedriver > /dev/null 2>&1 || ! command -v chromium > /dev/null 2>&1; then
    echo "== installing chromium and chromium-driver (browser tests)"
    apt_install chromium chromium-driver
fi
for tool in chromium chromedriver; do
    if ! command -v "$tool" > /dev/null 2>&1; then
        echo "test: $tool is missing and could not be installed; the browser tests need it" >&2
        exit 1
    fi
done

# The remote-agent tests start their own nats-server (JetStream on loopback, a temporary
# store directory per test): Debian's package provides the binary.
if ! command -v nats-server > /dev/null 2>&1; then
    echo "== installing nats-server (remote-agent tests)"
    apt_install nats-server
fi
if ! command -v nats-server > /dev/null 2>&1; then
    echo "test: nats-server is missing and could not be installed; the remote-agent tests need it" >&2
    exit 1
fi

echo "== cargo test --workspace (browser and NATS tests included)"
cargo test --workspace --locked -- --include-ignored

# The Python worker package (workers/python) against a real nats-server: its tests run in a
# virtualenv made once under ~/.cache/swarm/venv. The package is installed again only when its
# files changed since the last run (a stamp holds their checksum), so a second run is quick.
echo "== pytest workers/python (the Python worker package)"
venv="$HOME/.cache/swarm/venv"
if [ ! -x "$venv/bin/python" ]; then
    # Debian's python3 makes virtualenvs only with python3-venv installed.
    if ! python3 -c 'import ensurepip, venv' > /dev/null 2>&1; then
        echo "== installing python3-venv (the Python worker's tests)"
        apt_install python3-venv
    fi
    python3 -m venv "$venv"
fi
stamp="$venv/.swarm-worker-installed"
checksum=$(find workers/python/pyproject.toml workers/python/README.md workers/python/src -type f \
    ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$checksum" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check "./workers/python[test]"
    echo "$checksum" > "$stamp"
fi
# test_swarm_serve.py runs the `swarm` binary that `cargo test` built above.
SWARM_BIN="${CARGO_TARGET_DIR:-target}/debug/swarm" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider workers/python/tests
