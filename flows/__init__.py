"""Prefect flows: thin wiring of payesh library functions (retries, caching, schedules)."""
