"""From request body to rows: parse and validate the envelope, attribute, build rows."""
