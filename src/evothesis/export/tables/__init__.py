"""A client's events as a table in its own bucket: Delta Lake (delta-rs) or Apache Iceberg
(pyiceberg), partitioned by event day in Hive-style folders, readable by any engine.

The core is deliberately small and blind to how deliveries are cut: "append these rows for
client C under delivery identity D, exactly once; delete visitor V; compact; vacuum;
checkpoint". The identity is an opaque string the caller derives from its delivery; the table
itself records it in the same commit as the rows (Delta's application transaction, an Iceberg
snapshot's summary), so a delivery retried after a crash, replayed, or raced by a second
exporter is recognised from the table alone and never appended twice.
"""
