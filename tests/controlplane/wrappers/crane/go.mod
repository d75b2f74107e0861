// Wrapper module that builds crane (go-containerregistry), which pushes the
// node tests' offline images to the upstream registry.
module ecr-pullthrough.local/controlplane/crane

go 1.25.0

require github.com/google/go-containerregistry v0.22.1
