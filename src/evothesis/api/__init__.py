"""HTTP surface: thin routes that map requests to use cases and errors to statuses."""
