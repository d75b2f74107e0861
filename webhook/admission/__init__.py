"""The admission webhook process: HTTP transport, the AdmissionReview wire format, the handler,
the reloading TLS context, the upstream status file and the local demo."""
