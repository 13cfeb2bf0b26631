"""Data-subject requests: a visitor's events exported as one file, or deleted everywhere
they were written (buffer, raw objects, the client's processed files), with a receipt."""
