"""Export pipeline: buffer -> raw objects -> per-client files, metering."""
