"""The ledger: orders, their status rules, idempotent application of provider events, postings."""
