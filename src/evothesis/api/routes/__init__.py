"""The FastAPI routers, one file per audience or resource; they reach services only through
the typed dependencies of ``api.deps``."""
