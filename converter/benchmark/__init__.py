"""Latency measurement: the schedule, the per-runtime worker process, statistics, machine facts and findings.

Entry points: ``Schedule.from_recipe`` (what to run), ``measure`` (one latency row, in a fresh
process), ``fingerprint`` (the machine), ``findings`` (plausibility remarks on a finished report).
"""
