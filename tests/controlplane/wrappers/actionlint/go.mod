// Wrapper module that builds actionlint, which `make lint` runs on .github/workflows.
module ecr-pullthrough.local/controlplane/actionlint

go 1.25.0

require github.com/rhysd/actionlint v1.7.12
