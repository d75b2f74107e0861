"""Operator tools, beside the two processes: `scan` (what the webhook would do, before it is enabled).

They reuse the real decision (`core.mutate.mutate_pod` with the same `PodPolicy`), never a copy of it.
"""
