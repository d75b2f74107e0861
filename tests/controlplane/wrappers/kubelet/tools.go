//go:build tools

// Package tools pins the binary this wrapper module builds.
package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
