"""How requests and answers travel: ASGI types, the one-write protocol, body-read deadlines,
the client address behind proxies, and request counting."""
