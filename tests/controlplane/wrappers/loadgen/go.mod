module ecr-pullthrough.test/loadgen

go 1.22
