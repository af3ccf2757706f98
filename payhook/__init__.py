"""The payhook shell: the command line, settings, logging and the embedded dev stack."""
