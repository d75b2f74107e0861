module ecr-pullthrough.test/reference-oracle

go 1.22

require github.com/distribution/reference v0.6.0
