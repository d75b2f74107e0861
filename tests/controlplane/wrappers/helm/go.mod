// Wrapper module that builds helm from the Go module proxy.
module ecr-pullthrough.local/controlplane/helm

go 1.26.0

require helm.sh/helm/v3 v3.22.0
