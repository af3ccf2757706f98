"""Tests of the provider sandbox: its expectations, its generator, and `payhook dev --sandbox`."""
