"""The controller process: pull Secrets in every namespace, ECR tokens, upstream verification,
the webhook's certificates, leader election and health."""
