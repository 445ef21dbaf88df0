"""Command-line tools: `python -m jobs generate` (jobs.tools.generate), jobs.tools.dedup, jobs.tools.keys,
jobs.tools.sweep, the local stack (jobs.tools.local_stack) and the embedded model (jobs.tools.local_model)."""
