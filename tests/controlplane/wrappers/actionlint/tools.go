//go:build tools

// Package tools pins the binary this wrapper module builds.
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
