"""The operations console (``/console/``): a browser front end over the operators' JSON
endpoints. ``routes`` serves it; ``sessions`` signs its cookies; ``pages`` renders its
HTML frame; the pages' scripts live in ``evothesis/static/console/``."""
