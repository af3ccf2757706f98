"""Provider adapters: raw callback bytes in, canonical events out, acks, status queries."""
