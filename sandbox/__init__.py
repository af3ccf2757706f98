"""Fake providers and the traffic generator, for demos and tests; production never imports this."""
