"""The pure core both processes share: image references, the rewrite decision, the pod patch,
the upstream status document and the pull Secret's desired content. No I/O, no frameworks."""
