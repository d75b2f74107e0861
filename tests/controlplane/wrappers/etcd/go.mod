// Wrapper module that builds etcd from the Go module proxy. The etcd server
// module has replace directives of its own, so `go install` refuses it, but a
// module that requires it builds its main package fine.
module ecr-pullthrough.local/controlplane/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 v3.6.16
