// Wrapper module that builds kube-apiserver from the Go module proxy.
// k8s.io/kubernetes requires its staging modules at v0.0.0 with local
// replaces; tests/controlplane/build.py appends the matching
// `k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>` replaces,
// generated from k8s.io/kubernetes's own go.mod, before building.
module ecr-pullthrough.local/controlplane/kube-apiserver

go 1.25.0

require k8s.io/kubernetes v1.35.4
