-- create_staging --
-- Per-connection staging table: COPY lands here, then one INSERT … ON CONFLICT moves the
-- rows into events_log so that retried event ids are skipped instead of failing the COPY.
CREATE TEMP TABLE IF NOT EXISTS events_staging
    ON COMMIT DELETE ROWS
    AS SELECT event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
              url, path, referrer, ip_address, user_agent, raw_event_data, created_at,
              browser, browser_version, os, device_type, is_bot, country, region, city,
              referrer_class, utm_source, utm_medium, utm_campaign, utm_term, utm_content,
              source
       FROM events_log WITH NO DATA

-- move_staged_events --
-- Insert staged rows, skipping event ids their client has already stored; report what was
-- new per site.
WITH inserted AS (
    INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id, client_id,
                            "timestamp", url, path, referrer, ip_address, user_agent,
                            raw_event_data, created_at, browser, browser_version, os,
                            device_type, is_bot, country, region, city, referrer_class,
                            utm_source, utm_medium, utm_campaign, utm_term, utm_content,
                            source)
    SELECT event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
           url, path, referrer, ip_address, user_agent, raw_event_data, created_at,
           -- the staging table has no column defaults (CREATE TABLE AS)
           browser, browser_version, os, device_type, COALESCE(is_bot, false), country,
           region, city,
           referrer_class, utm_source, utm_medium, utm_campaign, utm_term, utm_content, source
    FROM events_staging
    ON CONFLICT (client_id, event_id) DO NOTHING
    RETURNING client_id, site_id
)
SELECT client_id, site_id, count(*) AS inserted FROM inserted GROUP BY client_id, site_id

-- insert_audit --
-- A hipaa batch's audit record, once per request id (retries and spool replays repeat it).
INSERT INTO hipaa_audit_log (recorded_at, client_id, site_id, visitor_id, events, ip_hash,
                             origin, collector, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (request_id) DO NOTHING

-- insert_failed_event --
-- An inner event that failed validation, once per (request, position): retries and spool
-- replays of the same request repeat it.
INSERT INTO failed_events (request_id, position, client_id, site_id, reason, field, message,
                           payload, received_at, visitor_id, session_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (request_id, position) DO NOTHING

-- count_events --
-- Total and per-client event counts in the buffer.
SELECT client_id, count(*) AS events FROM events_log GROUP BY client_id ORDER BY client_id

-- recent_events --
-- Newest events first, for debugging attribution.
SELECT id, event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
       url, path, referrer, ip_address, user_agent, raw_event_data, created_at,
       browser, browser_version, os, device_type, is_bot, country, region, city,
       referrer_class, utm_source, utm_medium, utm_campaign, utm_term, utm_content, source
FROM events_log ORDER BY id DESC LIMIT $1

-- ping --
-- Cheapest proof that the database answers.
SELECT 1

-- registry_lookup --
-- Registered patterns among a host's candidates (exact first, then wildcards), with the
-- owning client's settings; the caller picks the most specific pattern.
SELECT d.domain, c.client_id, c.active, c.privacy_level, c.ip_collection, c.honour_dnt,
       c.consent_mode, c.bot_policy, c.require_write_key, c.ip_salt, c.write_key_sha256
FROM client_domains d JOIN clients c USING (client_id)
WHERE d.domain = ANY($1::text[])

-- client_insert --
INSERT INTO clients (client_id, name, privacy_level, ip_collection, honour_dnt, consent_mode,
                     ip_salt, write_key_sha256, export_destination, export_format,
                     export_credentials, bot_policy, require_write_key, export_layout,
                     table_retention_days)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (client_id) DO NOTHING
RETURNING client_id

-- client_update --
-- Every field is written: the store merges changes into the current row first.
UPDATE clients
SET name = $2, privacy_level = $3, ip_collection = $4, honour_dnt = $5, consent_mode = $6,
    ip_salt = $7, write_key_sha256 = $8, export_destination = $9, export_format = $10,
    export_credentials = $11, bot_policy = $12, require_write_key = $13, export_layout = $14,
    table_retention_days = $15, active = $16, updated_at = now()
WHERE client_id = $1

-- client_set_write_key --
UPDATE clients SET write_key_sha256 = $2, updated_at = now() WHERE client_id = $1
RETURNING client_id

-- client_get --
-- One client with its domains, for update (the admin API merges changes into it).
SELECT c.*, COALESCE(array_agg(d.domain ORDER BY d.domain)
                     FILTER (WHERE d.domain IS NOT NULL), '{}') AS domains
FROM clients c LEFT JOIN client_domains d USING (client_id)
WHERE c.client_id = $1
GROUP BY c.client_id

-- client_lock --
-- The row an update merges its changes into, locked until the update commits.
SELECT * FROM clients WHERE client_id = $1 FOR UPDATE

-- client_list --
SELECT c.*, COALESCE(array_agg(d.domain ORDER BY d.domain)
                     FILTER (WHERE d.domain IS NOT NULL), '{}') AS domains
FROM clients c LEFT JOIN client_domains d USING (client_id)
GROUP BY c.client_id
ORDER BY c.client_id

-- domain_insert --
-- A domain belongs to at most one client: a conflicting insert returns the owner instead.
WITH inserted AS (
    INSERT INTO client_domains (domain, client_id) VALUES ($1, $2)
    ON CONFLICT (domain) DO NOTHING
    RETURNING client_id
)
SELECT client_id FROM inserted
UNION ALL
SELECT client_id FROM client_domains WHERE domain = $1 AND NOT EXISTS (SELECT 1 FROM inserted)

-- domain_delete --
DELETE FROM client_domains WHERE domain = $1 AND client_id = $2 RETURNING domain

-- export_claim_lock --
-- Claims follow one another: each starts where the previous batch ended.
SELECT pg_advisory_xact_lock(7461707468657369)

-- export_cursor --
-- Where the next batch starts: the end of the newest batch, or the very beginning.
SELECT batch_id, upto_xid::text AS upto_xid, upto_id
FROM export_batches ORDER BY batch_id DESC LIMIT 1

-- export_claim --
-- The next batch: at most $1 events after the cursor ($2, $3) in commit order, only from
-- transactions that have all ended (xid below this statement's snapshot xmin), so no commit
-- still in flight can later land inside the range. Nothing is returned when nothing is new.
WITH picked AS (
    SELECT xid, id, created_at FROM events_log
    WHERE (xid, id) > ($2::text::xid8, $3::bigint)
      AND xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY xid, id
    LIMIT $1
), summary AS (
    SELECT count(*) AS n, min(created_at) AS first_at, max(created_at) AS last_at FROM picked
), last AS (
    SELECT xid, id FROM picked ORDER BY xid DESC, id DESC LIMIT 1
)
INSERT INTO export_batches (batch_id, after_xid, after_id, upto_xid, upto_id, event_count,
                            first_created_at, last_created_at, lease_owner, lease_until,
                            attempts)
SELECT $4, $2::text::xid8, $3, last.xid, last.id, summary.n, summary.first_at, summary.last_at,
       $5, now() + make_interval(secs => $6), 1
FROM last, summary
RETURNING batch_id, claimed_at, after_xid::text AS after_xid, after_id,
          upto_xid::text AS upto_xid, upto_id, event_count, attempts

-- export_lease_batch --
-- A batch whose raw export is due: never leased, or its exporter's lease ran out (it died).
UPDATE export_batches b
SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), attempts = attempts + 1
WHERE b.batch_id = (
    SELECT batch_id FROM export_batches
    WHERE state = 'pending' AND next_attempt_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY batch_id LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING batch_id, claimed_at, after_xid::text AS after_xid, after_id,
          upto_xid::text AS upto_xid, upto_id, event_count, attempts

-- export_batch_rows --
-- A batch's events for COPY TO STDOUT (text format), in commit order: what metering needs,
-- then the raw JSON line (the view export_event_lines). The session time zone is UTC, so
-- created_at::date is the UTC day.
SELECT client_id, site_id, created_at::date, event_type = 'batch', line
FROM export_event_lines
WHERE (xid, id) > ($1::text::xid8, $2::bigint) AND (xid, id) <= ($3::text::xid8, $4::bigint)
ORDER BY xid, id

-- export_batch_failed_lines --
-- The failed events that belong to a batch: those of the transactions in its xid range
-- (after_xid, upto_xid]. Consecutive batches' ranges neither overlap nor leave gaps, and
-- every transaction at or below upto_xid had ended when the batch was claimed.
SELECT client_id, site_id, reason, received_at, line
FROM failed_event_lines
WHERE xid > $1::text::xid8 AND xid <= $2::text::xid8
ORDER BY xid, id

-- export_mark_exported --
-- Only the first exporter to finish a batch records it (a second one, whose lease had run
-- out, wrote the same objects and finds nothing to update). $5: the clients whose failed
-- events the batch's backup file holds.
UPDATE export_batches
SET state = 'exported', exported_at = now(), raw_key = $2, raw_bytes = $3, event_count = $4,
    failed_clients = $5, lease_owner = NULL, lease_until = NULL, last_error = NULL
WHERE batch_id = $1 AND state = 'pending'
RETURNING batch_id

-- export_add_deliveries --
-- One processed file per client of the batch, in the format and layout the client has now,
-- so that a retried delivery keeps its key even if the client changes them later.
INSERT INTO export_deliveries (batch_id, client_id, event_count, format, layout)
SELECT $1, d.client_id, d.events, COALESCE(c.export_format, $4),
       COALESCE(c.export_layout, 'dated')
FROM unnest($2::text[], $3::int[]) AS d (client_id, events)
LEFT JOIN clients c ON c.client_id = d.client_id
ON CONFLICT (batch_id, client_id) DO NOTHING

-- export_batch_failed --
-- Only while the lease is still ours: an exporter that took the batch over keeps it.
UPDATE export_batches
SET last_error = $2, next_attempt_at = now() + make_interval(secs => $3),
    lease_owner = NULL, lease_until = NULL
WHERE batch_id = $1 AND state = 'pending' AND lease_owner = $4

-- export_lease_deliveries --
-- Up to $4 (all when null) due deliveries of batch $3 (of any batch when null) of clients
-- that are not paused, oldest batches first.
WITH picked AS (
    SELECT d.batch_id, d.client_id FROM export_deliveries d
    LEFT JOIN export_destination_state s ON s.client_id = d.client_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND (d.lease_until IS NULL OR d.lease_until < now())
      AND (s.paused_until IS NULL OR s.paused_until <= now())
      AND ($3::bigint IS NULL OR d.batch_id = $3::bigint)
    ORDER BY d.batch_id, d.client_id
    LIMIT $4::bigint
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE export_deliveries d
SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM picked, export_batches b
WHERE d.batch_id = picked.batch_id AND d.client_id = picked.client_id
  AND b.batch_id = d.batch_id
RETURNING d.batch_id, d.client_id, d.event_count, d.format, d.attempts, b.raw_key,
          b.claimed_at, d.layout

-- export_mark_delivered --
-- Several deliveries at once (one raw object's clients), with their clients' destinations
-- recorded as working again.
WITH done AS (
    UPDATE export_deliveries d
    SET state = 'delivered', delivered_at = now(), object_key = x.object_key,
        object_bytes = x.object_bytes, lease_owner = NULL, lease_until = NULL,
        last_error = NULL
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
         AS x (batch_id, client_id, object_key, object_bytes)
    WHERE d.batch_id = x.batch_id AND d.client_id = x.client_id AND d.state = 'pending'
    RETURNING d.client_id
)
INSERT INTO export_destination_state (client_id, last_success_at)
SELECT DISTINCT client_id, now() FROM done
ON CONFLICT (client_id) DO UPDATE
SET consecutive_failures = 0, paused_until = NULL, last_success_at = now()

-- export_table_state --
-- The client's own retention of its tables' removed files, in days (null: the default), and
-- when its table in format $2 was last checkpointed and vacuumed (null: never).
SELECT (SELECT table_retention_days FROM clients WHERE client_id = $1) AS retention_days,
       (SELECT maintained_at FROM export_table_maintenance
        WHERE client_id = $1 AND format = $2) AS maintained_at

-- export_table_try_lock --
-- One maintainer per table at a time (compactions of the same files must not both commit).
SELECT pg_try_advisory_lock(hashtext('evothesis-table:' || $1::text), hashtext($2::text))

-- export_table_unlock --
SELECT pg_advisory_unlock(hashtext('evothesis-table:' || $1::text), hashtext($2::text))

-- export_table_maintained --
INSERT INTO export_table_maintenance (client_id, format, maintained_at)
VALUES ($1, $2, now())
ON CONFLICT (client_id, format) DO UPDATE SET maintained_at = now()

-- export_delivery_failed --
-- Only while the lease is still ours, as for batches.
UPDATE export_deliveries
SET last_error = $3, next_attempt_at = now() + make_interval(secs => $4),
    lease_owner = NULL, lease_until = NULL
WHERE batch_id = $1 AND client_id = $2 AND state = 'pending' AND lease_owner = $5

-- export_destination_failed --
-- The client is paused for $3 seconds: its deliveries wait, other clients' go on.
INSERT INTO export_destination_state (client_id, consecutive_failures, paused_until,
                                      last_error, last_failure_at)
VALUES ($1, 1, now() + make_interval(secs => $3), $2, now())
ON CONFLICT (client_id) DO UPDATE
SET consecutive_failures = export_destination_state.consecutive_failures + 1,
    paused_until = now() + make_interval(secs => $3), last_error = $2, last_failure_at = now()
RETURNING consecutive_failures

-- export_purge --
-- Delete the events (and failed events) of one batch exported more than $1 seconds ago.
WITH batch AS (
    SELECT batch_id, after_xid, after_id, upto_xid, upto_id FROM export_batches
    WHERE state = 'exported' AND purged_at IS NULL
      AND exported_at < now() - make_interval(secs => $1)
    ORDER BY batch_id LIMIT 1
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM events_log e USING batch b
    WHERE (e.xid, e.id) > (b.after_xid, b.after_id) AND (e.xid, e.id) <= (b.upto_xid, b.upto_id)
    RETURNING 1
), gone_failed AS (
    DELETE FROM failed_events f USING batch b
    WHERE f.xid > b.after_xid AND f.xid <= b.upto_xid
)
UPDATE export_batches x SET purged_at = now()
FROM batch
WHERE x.batch_id = batch.batch_id
RETURNING x.batch_id, (SELECT count(*) FROM gone) AS deleted

-- export_backlog --
-- Events not yet in any batch (counted up to $3, so a huge backlog costs a bounded scan).
SELECT count(*) AS rows, min(created_at) AS oldest FROM (
    SELECT created_at FROM events_log
    WHERE (xid, id) > ($1::text::xid8, $2::bigint)
    ORDER BY xid, id
    LIMIT $3
) s

-- export_batch_summary --
SELECT
    count(*) FILTER (WHERE state = 'pending') AS pending_batches,
    COALESCE(sum(event_count) FILTER (WHERE state = 'pending'), 0) AS pending_batch_events,
    count(*) FILTER (WHERE state = 'pending' AND last_error IS NOT NULL) AS failed_batches,
    count(*) FILTER (WHERE state = 'exported') AS exported_batches,
    COALESCE(sum(event_count) FILTER (WHERE state = 'exported'), 0) AS exported_events,
    max(exported_at) AS last_exported_at,
    min(first_created_at) FILTER (WHERE state = 'pending') AS oldest_pending_at,
    count(*) FILTER (WHERE purged_at IS NOT NULL) AS purged_batches
FROM export_batches

-- export_failed_batches --
SELECT batch_id, attempts, last_error, next_attempt_at, event_count FROM export_batches
WHERE state = 'pending' AND last_error IS NOT NULL ORDER BY batch_id LIMIT $1

-- export_last_batch --
SELECT batch_id, exported_at, event_count, raw_key FROM export_batches
WHERE state = 'exported' ORDER BY exported_at DESC, batch_id DESC LIMIT 1

-- export_delivery_summary --
SELECT client_id,
       count(*) FILTER (WHERE state = 'pending') AS pending_files,
       COALESCE(sum(event_count) FILTER (WHERE state = 'pending'), 0) AS pending_events,
       count(*) FILTER (WHERE state = 'delivered') AS delivered_files,
       COALESCE(sum(event_count) FILTER (WHERE state = 'delivered'), 0) AS delivered_events,
       max(delivered_at) AS last_delivered_at,
       -- Pending deliveries whose last attempt failed, and the newest of their errors: a
       -- failure that pauses nobody (the raw object, not the client's bucket) shows here.
       count(*) FILTER (WHERE state = 'pending' AND last_error IS NOT NULL) AS failing_files,
       (array_agg(last_error ORDER BY next_attempt_at DESC)
            FILTER (WHERE state = 'pending' AND last_error IS NOT NULL))[1] AS delivery_error
FROM export_deliveries GROUP BY client_id ORDER BY client_id

-- export_unprocessed_objects --
SELECT count(DISTINCT batch_id) AS objects FROM export_deliveries WHERE state = 'pending'

-- export_destination_states --
SELECT client_id, consecutive_failures, paused_until, last_error, last_failure_at,
       last_success_at, paused_until > now() AS paused
FROM export_destination_state ORDER BY client_id

-- export_shared_lock --
-- Held by an export or processing run for its whole length (session level, so that it
-- spans the run's many transactions); a data-subject deletion takes the same lock
-- exclusively, so no run reads an object or a buffer row while it is being rewritten.
SELECT pg_advisory_lock_shared(7461707468657370)

-- export_shared_unlock --
SELECT pg_advisory_unlock_shared(7461707468657370)

-- gdpr_exclusive_lock --
SELECT pg_advisory_lock(7461707468657370)

-- gdpr_exclusive_unlock --
SELECT pg_advisory_unlock(7461707468657370)

-- set_local_lock_timeout --
-- How long this transaction waits for a lock before giving up ($1: milliseconds); the
-- setting ends with the transaction, so it never stays on a pooled connection.
SELECT set_config('lock_timeout', $1::text, true)

-- gdpr_client_exists --
SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = $1)
    OR EXISTS (SELECT 1 FROM export_deliveries WHERE client_id = $1)

-- gdpr_client_batches --
-- Every exported raw object holding events of the client ($1), with the client's processed
-- file of that batch: a batch without a delivery for the client holds none of its events.
SELECT b.batch_id, b.claimed_at, b.raw_key, d.event_count, d.format, d.attempts, d.state,
       d.object_key, d.layout
FROM export_deliveries d
JOIN export_batches b ON b.batch_id = d.batch_id
WHERE d.client_id = $1 AND b.state = 'exported'
ORDER BY b.batch_id

-- gdpr_failed_batches --
-- Every exported batch whose backup failed-events file holds failed events of the client ($1).
SELECT batch_id, claimed_at
FROM export_batches
WHERE failed_clients @> ARRAY[$1::text] AND state = 'exported'
ORDER BY batch_id

-- gdpr_buffer_lines --
-- The visitor's events still in the buffer, as raw export lines.
SELECT id, line FROM export_event_lines WHERE client_id = $1 AND visitor_id = $2 ORDER BY id

-- gdpr_buffer_failed_lines --
-- The visitor's failed events still in the buffer, as the backup bucket's lines.
SELECT id, line FROM failed_event_lines WHERE client_id = $1 AND visitor_id = $2 ORDER BY id

-- gdpr_delete_buffer --
-- The visitor's events and failed events, in one statement: (events, failed events).
WITH gone AS (
    DELETE FROM events_log WHERE client_id = $1 AND visitor_id = $2 RETURNING 1
), gone_failed AS (
    DELETE FROM failed_events WHERE client_id = $1 AND visitor_id = $2 RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS events, (SELECT count(*) FROM gone_failed) AS failed

-- gdpr_audit_insert --
INSERT INTO gdpr_audit (request_id, kind, step, client_id, visitor_sha256, receipt)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)

-- gdpr_audit_list --
-- The newest steps first; $1 NULL lists every client.
SELECT request_id, kind, step, client_id, visitor_sha256, recorded_at, receipt::text AS receipt
FROM gdpr_audit
WHERE $1::text IS NULL OR client_id = $1
ORDER BY recorded_at DESC, id DESC
LIMIT $2

-- record_site_discoveries --
-- Billing: the (client, site) pairs of a flush that its process had not seen yet, each with
-- its earliest event. A pair already recorded keeps its row unless this event is earlier
-- (collectors race, spools replay late); rows come sorted, so racing flushes lock in order.
INSERT INTO site_discoveries (client_id, site_id, first_seen)
SELECT client_id, site_id, first_seen
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS d (client_id, site_id, first_seen)
ON CONFLICT (client_id, site_id) DO UPDATE
SET first_seen = LEAST(site_discoveries.first_seen, EXCLUDED.first_seen)
WHERE EXCLUDED.first_seen < site_discoveries.first_seen

-- billing_discoveries --
-- Sites discovered for one client (or all: $1 NULL), first seen in [$2, $3) (NULL: open).
SELECT client_id, site_id, first_seen, recorded_at FROM site_discoveries
WHERE ($1::text IS NULL OR client_id = $1::text)
  AND ($2::timestamptz IS NULL OR first_seen >= $2::timestamptz)
  AND ($3::timestamptz IS NULL OR first_seen < $3::timestamptz)
ORDER BY client_id, first_seen, site_id

-- billing_ledger_batches --
-- The ledger's side of a reconciliation: the batches named in $1 (their metering was read)
-- and every exported batch with events in [$2, $3), with each client's event count (none
-- while a batch is still pending).
SELECT b.batch_id, b.state, b.first_created_at, b.last_created_at, d.client_id,
       d.event_count
FROM export_batches b LEFT JOIN export_deliveries d USING (batch_id)
WHERE b.batch_id = ANY($1::bigint[])
   OR (b.state = 'exported' AND b.last_created_at >= $2 AND b.first_created_at < $3)
ORDER BY b.batch_id, d.client_id
