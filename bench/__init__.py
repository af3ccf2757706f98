"""Benchmarks that print figures: `python -m bench [--quick] [--json PATH]`."""
