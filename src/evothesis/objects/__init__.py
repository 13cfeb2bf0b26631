"""Object storage and the CPU worker pool, shared by export, data-subject requests and
billing: bucket URLs and options, one ``Bucket`` interface over obstore, and worker
processes for the CPU-bound work on objects."""
