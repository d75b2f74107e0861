// Wrapper module that builds the kubelet from the Go module proxy, at
// kube-apiserver's version. Like kube-apiserver, k8s.io/kubernetes requires
// its staging modules at v0.0.0 with local replaces; tests/controlplane/build.py
// appends the `k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>`
// replaces before building. A unit test keeps this version equal to
// kube-apiserver's.
module ecr-pullthrough.local/controlplane/kubelet

go 1.25.0

require k8s.io/kubernetes v1.35.4
