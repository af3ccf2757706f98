"""Reconciliation: due-order selection, polling, pass reports and operator alerts."""
