"""Operator tools, beside the two processes: `scan` (what the webhook would do, before it is enabled) and
`doctor` (a checklist of what works and what to fix; the chart's `helm test` runs its webhook check).

They reuse the real decision (`core.mutate.mutate_pod` with the same `PodPolicy`), never a copy of it,
and may import the core and the controller's clients.
"""
