"""ecr-pullthrough: Docker Hub images rewritten to an AWS ECR pull-through cache on every pod admission."""
