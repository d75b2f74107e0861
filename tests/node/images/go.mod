// The node tests' offline images: static programs with the standard library only.
module ecr-pullthrough.test/node-images

go 1.22
