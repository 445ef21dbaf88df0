"""The Self-Instruct engine and the work behind the service: stages, filters, state, artifacts, RQ jobs.

Never imports Flask or service/.
"""

__version__ = "0.1.0"
