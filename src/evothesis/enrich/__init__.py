"""Enrichment: what the collector adds to an event from the request and the event itself.

Every module here is pure apart from loading its data once (parser rules, bot list, geo
database) and keeps bounded caches, because user agents, IPs and page URLs repeat heavily.
"""
