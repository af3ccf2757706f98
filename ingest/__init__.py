"""The aiohttp receiver: callback routes, the durable inbox write, the read API."""
