"""Provider adapters: raw callback bytes in, canonical events out; acknowledgements; status queries."""
