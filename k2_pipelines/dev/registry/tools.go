//go:build tools

// Package tools pins the Confluent-compatible Schema Registry K2 tests its registry client against
// (AxonOps Schema Registry, built from the Go module proxy: `go build` in this directory).
package tools

import _ "github.com/axonops/axonops-schema-registry/cmd/schema-registry"
