#!/usr/bin/env bash
# Installs Debian's PostgreSQL server (initdb, pg_ctl) for the production-shape tests, if it is not there yet.
# The tests start and stop their own cluster (k2_pipelines_tests/services.py); the package's own cluster is not used.
set -euo pipefail
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && exit 0
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
