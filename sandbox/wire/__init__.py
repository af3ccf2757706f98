"""The providers' side of each wire format: callbacks as providers send them, query answers."""
