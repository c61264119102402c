#!/usr/bin/env bash
# Builds the S3-compatible server the production-shape tests use as the Iceberg warehouse: gofakes3 (MIT), a real
# S3 HTTP API (the tests use its in-memory backend). Built once from the Go module proxy into .k2/bin/ (K2_BIN overrides).
set -euo pipefail
VERSION=v1.2.0
BIN_DIR=${K2_BIN:-$(cd "$(dirname "$0")/.." && pwd)/.k2/bin}
STAMP="$BIN_DIR/gofakes3.$VERSION"
[ -x "$BIN_DIR/gofakes3" ] && [ -e "$STAMP" ] && exit 0
command -v go >/dev/null || { echo "s3.sh: Go is needed to build the S3 server (gofakes3)" >&2; exit 1; }
mkdir -p "$BIN_DIR"
GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false go install "github.com/johannesboyne/gofakes3/cmd/gofakes3@$VERSION"
touch "$STAMP"
