-- create_staging --
-- Per-connection staging table: COPY lands here, then one INSERT … ON CONFLICT moves the
-- rows into events_log so that retried event ids are skipped instead of failing the COPY.
CREATE TEMP TABLE IF NOT EXISTS events_staging
    ON COMMIT DELETE ROWS
    AS SELECT event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
              url, path, referrer, ip_address, user_agent, raw_event_data, created_at,
              browser, browser_version, os, device_type, is_bot, country, region, city,
              referrer_class, utm_source, utm_medium, utm_campaign, utm_term, utm_content,
              source, user_id
       FROM events_log WITH NO DATA

-- move_staged_events --
-- Insert staged rows, skipping event ids their client has already stored: in the row's own
-- day (the partition's unique index, ON CONFLICT) or the day before or after it (by arrival,
-- UTC; see window_retries), and a second copy within the flush. Report what was new per
-- site.
WITH inserted AS (
    INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id, client_id,
                            "timestamp", url, path, referrer, ip_address, user_agent,
                            raw_event_data, created_at, browser, browser_version, os,
                            device_type, is_bot, country, region, city, referrer_class,
                            utm_source, utm_medium, utm_campaign, utm_term, utm_content,
                            source, user_id)
    SELECT DISTINCT ON (client_id, event_id)
           event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
           url, path, referrer, ip_address, user_agent, raw_event_data, created_at,
           -- the staging table has no column defaults (CREATE TABLE AS)
           browser, browser_version, os, device_type, COALESCE(is_bot, false), country,
           region, city,
           referrer_class, utm_source, utm_medium, utm_campaign, utm_term, utm_content, source,
           user_id
    FROM events_staging s
    WHERE NOT EXISTS (
        SELECT 1 FROM events_log o,
        LATERAL (SELECT date_trunc('day', s.created_at, 'UTC') AS day) d
        WHERE o.client_id = s.client_id AND o.event_id = s.event_id
          AND ((o.created_at >= d.day - interval '24 hours' AND o.created_at < d.day)
               OR (o.created_at >= d.day + interval '24 hours'
                   AND o.created_at < d.day + interval '48 hours'))
    )
    ORDER BY client_id, event_id, created_at
    -- no conflict target: each day's partition has its own unique (client_id, event_id)
    ON CONFLICT DO NOTHING
    RETURNING client_id, site_id
)
SELECT client_id, site_id, count(*) AS inserted FROM inserted GROUP BY client_id, site_id

-- window_retries --
-- Whether a row this transaction wrote, all of whose rows arrived on the UTC day starting at
-- $1, has an event id its client stored the day before or after (events_log's partitions
-- are days of arrival). Each partition's unique index sees retries within its day only;
-- this sees a retry that arrived just after midnight, or a spool replay of the evening
-- before. The bounds are parameters, so the two neighbouring days are chosen once per
-- statement, then each new row costs one probe of their (client_id, event_id) indexes.
SELECT EXISTS (
    SELECT 1 FROM events_log n,
    LATERAL (
        SELECT 1 FROM events_log o
        WHERE o.client_id = n.client_id AND o.event_id = n.event_id
          AND ((o.created_at >= $1::timestamptz - interval '24 hours'
                AND o.created_at < $1::timestamptz)
               OR (o.created_at >= $1::timestamptz + interval '24 hours'
                   AND o.created_at < $1::timestamptz + interval '48 hours'))
        LIMIT 1
    ) seen
    WHERE n.xid = pg_current_xact_id()
      AND n.created_at >= $1::timestamptz AND n.created_at < $1::timestamptz + interval '24 hours'
)

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
                           payload, received_at, visitor_id, session_id, user_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (request_id, position) DO NOTHING

-- count_events --
-- Per client, in one statement's snapshot: every event ever stored, and the events in the
-- buffer now: the counts folded so far plus the changes the triggers on events_log recorded
-- since (migration 0016). A few rows per client, however large the buffer.
WITH changes AS (
    SELECT client_id, sum(stored) AS stored, sum(buffered) AS buffered
    FROM event_count_changes GROUP BY client_id
)
SELECT client_id,
       (COALESCE(c.buffered, 0) + COALESCE(x.buffered, 0))::bigint AS buffered,
       (COALESCE(c.stored, 0) + COALESCE(x.stored, 0))::bigint AS total
FROM client_event_counts c
FULL JOIN changes x USING (client_id)
ORDER BY client_id

-- fold_event_counts --
-- The changes recorded so far added to the per-client counts, in one transaction: a
-- concurrent count sees them either still as changes or already folded, never both. Run
-- under an advisory lock (event_counts_try_lock), so two folds never wait on each other.
WITH folded AS (
    DELETE FROM event_count_changes RETURNING client_id, stored, buffered
)
INSERT INTO client_event_counts AS c (client_id, stored, buffered)
SELECT client_id, sum(stored), sum(buffered) FROM folded GROUP BY client_id
ON CONFLICT (client_id) DO UPDATE
SET stored = c.stored + EXCLUDED.stored, buffered = c.buffered + EXCLUDED.buffered

-- event_counts_try_lock --
-- One fold at a time (released at the end of its transaction); another one skips folding.
SELECT pg_try_advisory_xact_lock(hashtext('evothesis-event-counts'))

-- recent_events --
-- Newest events first, for debugging attribution; $2-$4 (NULL: any) narrow them to a
-- client, a site and an event type.
SELECT id, event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
       url, path, referrer, ip_address, user_agent, raw_event_data, created_at,
       browser, browser_version, os, device_type, is_bot, country, region, city,
       referrer_class, utm_source, utm_medium, utm_campaign, utm_term, utm_content, source,
       user_id
FROM events_log
WHERE ($2::text IS NULL OR client_id = $2::text)
  AND ($3::text IS NULL OR site_id = $3::text)
  AND ($4::text IS NULL OR event_type = $4::text)
ORDER BY id DESC LIMIT $1

-- recent_failed_events --
-- Newest failed events first ($2 NULL: of every client), with their reasons and payloads
-- as stored (redacted by their client's rules).
SELECT id, request_id, position, client_id, site_id, visitor_id, session_id, reason, field,
       message, payload::text AS payload, received_at
FROM failed_events
WHERE $2::text IS NULL OR client_id = $2::text
ORDER BY id DESC LIMIT $1

-- ping --
-- Cheapest proof that the database answers.
SELECT 1

-- registry_lookup --
-- Registered patterns among a host's candidates (exact first, then wildcards), with the
-- owning client's settings; the caller picks the most specific pattern.
SELECT d.domain, c.client_id, c.active, c.privacy_level, c.ip_collection, c.honour_dnt,
       c.consent_mode, c.bot_policy, c.require_write_key, c.ip_salt, c.write_key_sha256,
       c.user_id_storage
FROM client_domains d JOIN clients c USING (client_id)
WHERE d.domain = ANY($1::text[])

-- registry_write_key_lookup --
-- The client whose write key has this SHA-256 digest (the /v1 endpoints name no site).
SELECT client_id, active, privacy_level, ip_collection, honour_dnt, consent_mode, bot_policy,
       require_write_key, ip_salt, write_key_sha256, user_id_storage
FROM clients WHERE write_key_sha256 = $1

-- client_insert --
INSERT INTO clients (client_id, name, privacy_level, ip_collection, honour_dnt, consent_mode,
                     ip_salt, write_key_sha256, export_destination, export_format,
                     export_credentials, bot_policy, require_write_key, export_schedule,
                     export_threshold, notify_url, notify_secret, user_id_storage,
                     export_layout, table_retention_days)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20)
ON CONFLICT (client_id) DO NOTHING
RETURNING client_id

-- client_update --
-- Every field is written: the store merges changes into the current row first.
UPDATE clients
SET name = $2, privacy_level = $3, ip_collection = $4, honour_dnt = $5, consent_mode = $6,
    ip_salt = $7, write_key_sha256 = $8, export_destination = $9, export_format = $10,
    export_credentials = $11, bot_policy = $12, require_write_key = $13,
    export_schedule = $14, export_threshold = $15, notify_url = $16, notify_secret = $17,
    user_id_storage = $18, export_layout = $19, table_retention_days = $20, active = $21,
    updated_at = now()
WHERE client_id = $1

-- client_set_write_key --
UPDATE clients SET write_key_sha256 = $2, updated_at = now() WHERE client_id = $1
RETURNING client_id

-- client_by_write_key --
-- The client a write key belongs to (its digest is what is stored), for the on-demand
-- delivery endpoint.
SELECT client_id, active FROM clients WHERE write_key_sha256 = $1

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
-- created_at::date is the UTC day. The range holds at most the $5 events it was claimed
-- with; saying so keeps the plan an index range scan where the planner would guess a large
-- share of the buffer (a transaction of many rows: one xid) and scan all of it instead.
SELECT client_id, site_id, created_at::date, event_type = 'batch', line
FROM export_event_lines
WHERE (xid, id) > ($1::text::xid8, $2::bigint) AND (xid, id) <= ($3::text::xid8, $4::bigint)
ORDER BY xid, id
LIMIT $5

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

-- export_add_shares --
-- The clients' shares of a batch, in no delivery yet: each client's schedule decides when
-- they are cut into a delivery (export_insert_deliveries).
INSERT INTO export_shares (batch_id, client_id, event_count)
SELECT $1, s.client_id, s.events
FROM unnest($2::text[], $3::int[]) AS s (client_id, events)
ON CONFLICT (batch_id, client_id) DO NOTHING

-- export_pending_clients --
-- Clients with exported events in no delivery yet ($1: only this one), with what deciding
-- whether a delivery is due needs: those events, the claim time of their oldest batch, the
-- client's schedule and threshold (NULL: the defaults), the schedule tick it was last cut
-- for and an on-demand request waiting.
SELECT s.client_id, sum(s.event_count)::bigint AS pending_events,
       min(b.claimed_at) AS oldest_claimed_at, c.export_schedule, c.export_threshold,
       st.last_tick, st.delivery_requested_at
FROM export_shares s
JOIN export_batches b USING (batch_id)
LEFT JOIN clients c ON c.client_id = s.client_id
LEFT JOIN export_client_state st ON st.client_id = s.client_id
WHERE s.delivery_seq IS NULL AND ($1::text IS NULL OR s.client_id = $1::text)
GROUP BY s.client_id, c.export_schedule, c.export_threshold, st.last_tick,
         st.delivery_requested_at
ORDER BY s.client_id

-- export_client_state_ensure --
INSERT INTO export_client_state (client_id) VALUES ($1) ON CONFLICT (client_id) DO NOTHING

-- export_client_state_lock --
-- The client's cutting lock: one process cuts a client's deliveries at a time, another skips
-- the client (no row) rather than wait.
SELECT last_tick FROM export_client_state WHERE client_id = $1 FOR UPDATE SKIP LOCKED

-- export_cut_shares --
-- The client's shares in no delivery yet, of batches claimed before $2 (all when NULL), in
-- batch order.
SELECT s.batch_id, s.event_count
FROM export_shares s JOIN export_batches b USING (batch_id)
WHERE s.client_id = $1 AND s.delivery_seq IS NULL
  AND ($2::timestamptz IS NULL OR b.claimed_at < $2::timestamptz)
ORDER BY s.batch_id

-- export_next_seq --
SELECT COALESCE(max(seq), 0) + 1 FROM export_deliveries WHERE client_id = $1

-- export_insert_deliveries --
-- New deliveries of client $1 (numbers, batch spans and event counts as arrays), in the
-- format and file layout the client has now ($3 and 'dated' when it has none), fixed so that
-- a retried delivery keeps its keys and bytes even if the client changes them later.
INSERT INTO export_deliveries (client_id, seq, trigger, format, layout, first_batch,
                               last_batch, event_count)
SELECT $1, d.seq, $2, COALESCE((SELECT export_format FROM clients WHERE client_id = $1), $3),
       COALESCE((SELECT export_layout FROM clients WHERE client_id = $1), 'dated'),
       d.first_batch, d.last_batch, d.events
FROM unnest($4::bigint[], $5::bigint[], $6::bigint[], $7::int[])
     AS d (seq, first_batch, last_batch, events)

-- export_assign_shares --
UPDATE export_shares s SET delivery_seq = x.seq
FROM unnest($2::bigint[], $3::bigint[]) AS x (batch_id, seq)
WHERE s.client_id = $1 AND s.batch_id = x.batch_id AND s.delivery_seq IS NULL

-- export_client_cut --
-- A cut recorded: the schedule tick it was for ($2; kept when NULL), and an on-demand request
-- answered ($3).
UPDATE export_client_state
SET last_tick = COALESCE($2, last_tick),
    delivery_requested_at = CASE WHEN $3 THEN NULL ELSE delivery_requested_at END
WHERE client_id = $1

-- export_request_delivery --
-- A client's on-demand request, accepted unless its previous one was less than $2 seconds
-- ago; the seconds until the next may come when refused.
WITH accepted AS (
    INSERT INTO export_client_state (client_id, delivery_requested_at, last_request_at)
    VALUES ($1, now(), now())
    ON CONFLICT (client_id) DO UPDATE
    SET delivery_requested_at = now(), last_request_at = now()
    WHERE export_client_state.last_request_at IS NULL
       OR export_client_state.last_request_at <= now() - make_interval(secs => $2)
    RETURNING client_id
)
SELECT EXISTS (SELECT 1 FROM accepted) AS accepted,
       (SELECT extract(epoch FROM last_request_at + make_interval(secs => $2) - now())
        FROM export_client_state WHERE client_id = $1)::float8 AS retry_after

-- export_batch_failed --
-- Only while the lease is still ours: an exporter that took the batch over keeps it.
UPDATE export_batches
SET last_error = $2, next_attempt_at = now() + make_interval(secs => $3),
    lease_owner = NULL, lease_until = NULL
WHERE batch_id = $1 AND state = 'pending' AND lease_owner = $4

-- export_lease_deliveries --
-- Due deliveries of clients that are not paused ($4: only this client's), leased to $1 for
-- $2 seconds. With $5 NULL: the one with the oldest first batch. Otherwise those whose
-- batches overlap [$5, $6], oldest first, up to $3 events in all (at least one): one reading
-- of each raw object then serves all of them.
WITH candidates AS (
    SELECT d.client_id, d.seq, d.first_batch, d.event_count FROM export_deliveries d
    LEFT JOIN export_destination_state s ON s.client_id = d.client_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND (d.lease_until IS NULL OR d.lease_until < now())
      AND (s.paused_until IS NULL OR s.paused_until <= now())
      AND ($4::text IS NULL OR d.client_id = $4::text)
      AND ($5::bigint IS NULL OR (d.first_batch <= $6::bigint AND d.last_batch >= $5::bigint))
    ORDER BY d.first_batch, d.client_id, d.seq
    LIMIT CASE WHEN $5::bigint IS NULL THEN 1 END
    FOR UPDATE OF d SKIP LOCKED
), picked AS (
    SELECT client_id, seq FROM (
        SELECT client_id, seq,
               sum(event_count) OVER (ORDER BY first_batch, client_id, seq) AS running,
               row_number() OVER (ORDER BY first_batch, client_id, seq) AS n
        FROM candidates
    ) c
    WHERE n = 1 OR running <= $3
)
UPDATE export_deliveries d
SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM picked
WHERE d.client_id = picked.client_id AND d.seq = picked.seq
RETURNING d.client_id, d.seq, d.trigger, d.format, d.layout, d.cut_at, d.attempts,
          d.event_count, d.first_batch, d.last_batch

-- export_renew_deliveries --
-- Deliveries still being written by their lease owner ($3) keep their lease another $4
-- seconds, so that a long delivery is not taken over while it is being written.
UPDATE export_deliveries d
SET lease_until = now() + make_interval(secs => $4)
FROM unnest($1::text[], $2::bigint[]) AS x (client_id, seq)
WHERE d.client_id = x.client_id AND d.seq = x.seq AND d.state = 'pending'
  AND d.lease_owner = $3

-- export_mark_delivered --
-- Deliveries done ($1 clients, $2 numbers, $3 their files as JSON arrays), their clients'
-- destinations recorded as working again, and a notice for each client with a webhook whose
-- destination had been failing (destination.resumed).
WITH done AS (
    UPDATE export_deliveries d
    SET state = 'delivered', delivered_at = now(), files = x.files::jsonb, lease_owner = NULL,
        lease_until = NULL, last_error = NULL, first_failed_at = NULL
    FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x (client_id, seq, files)
    WHERE d.client_id = x.client_id AND d.seq = x.seq AND d.state = 'pending'
    RETURNING d.client_id
), resumed AS (
    UPDATE export_destination_state s
    SET consecutive_failures = 0, paused_until = NULL, last_success_at = now()
    WHERE s.client_id IN (SELECT client_id FROM done) AND s.consecutive_failures > 0
    RETURNING s.client_id, s.last_failure_at
), healthy AS (
    INSERT INTO export_destination_state (client_id, last_success_at)
    SELECT DISTINCT client_id, now() FROM done
    WHERE client_id NOT IN (SELECT client_id FROM resumed)
    ON CONFLICT (client_id) DO UPDATE SET last_success_at = now()
)
INSERT INTO export_notices (client_id, kind, payload)
SELECT r.client_id, 'destination.resumed',
       jsonb_build_object('resumed_at', now(), 'last_failure_at', r.last_failure_at)
FROM resumed r JOIN clients c ON c.client_id = r.client_id
WHERE c.notify_url IS NOT NULL

-- export_table_state --
-- The client's own retention of its tables' removed files, in days (null: the default), and
-- when its table at $2 was last checkpointed and vacuumed (null: never).
SELECT (SELECT table_retention_days FROM clients WHERE client_id = $1) AS retention_days,
       (SELECT maintained_at FROM export_table_maintenance
        WHERE location = $2) AS maintained_at

-- export_table_try_lock --
-- One maintainer per table ($1: its location) at a time (compactions of the same files must
-- not both commit).
SELECT pg_try_advisory_lock(hashtext('evothesis-table'), hashtext($1::text))

-- export_table_unlock --
SELECT pg_advisory_unlock(hashtext('evothesis-table'), hashtext($1::text))

-- export_table_maintained --
INSERT INTO export_table_maintenance (location, maintained_at)
VALUES ($1, now())
ON CONFLICT (location) DO UPDATE SET maintained_at = now()

-- export_table_commits --
-- The tables (their own ids) known to hold the commit of delivery identity $1.
SELECT table_id FROM export_table_commits WHERE identity = $1

-- export_table_committed --
-- Delivery identity $1 is in the table whose id is $2 (recorded after the commit).
INSERT INTO export_table_commits (identity, table_id)
VALUES ($1, $2)
ON CONFLICT (identity, table_id) DO NOTHING

-- export_delivery_failed --
-- Only while the lease is still ours, as for batches; the first failure starts the clocks of
-- the failure notice and the dead-letter limit.
UPDATE export_deliveries
SET last_error = $3, next_attempt_at = now() + make_interval(secs => $4),
    lease_owner = NULL, lease_until = NULL, first_failed_at = COALESCE(first_failed_at, now())
WHERE client_id = $1 AND seq = $2 AND state = 'pending' AND lease_owner = $5

-- export_destination_failed --
-- The client is paused for $3 seconds: its deliveries wait, other clients' go on. Its first
-- failure after working is a notice for a client with a webhook (destination.paused).
WITH state AS (
    INSERT INTO export_destination_state (client_id, consecutive_failures, paused_until,
                                          last_error, last_failure_at)
    VALUES ($1, 1, now() + make_interval(secs => $3), $2, now())
    ON CONFLICT (client_id) DO UPDATE
    SET consecutive_failures = export_destination_state.consecutive_failures + 1,
        paused_until = now() + make_interval(secs => $3), last_error = $2,
        last_failure_at = now()
    RETURNING consecutive_failures, paused_until
)
INSERT INTO export_notices (client_id, kind, payload)
SELECT $1, 'destination.paused',
       jsonb_build_object('error', $2::text, 'paused_until', state.paused_until)
FROM state JOIN clients c ON c.client_id = $1
WHERE state.consecutive_failures = 1 AND c.notify_url IS NOT NULL

-- export_delivery_shares --
-- The shares of deliveries ($1 clients, $2 numbers) with their raw objects, in batch order.
SELECT s.client_id, s.delivery_seq AS seq, s.batch_id, s.event_count, b.claimed_at, b.raw_key
FROM unnest($1::text[], $2::bigint[]) AS x (client_id, seq)
JOIN export_shares s ON s.client_id = x.client_id AND s.delivery_seq = x.seq
JOIN export_batches b ON b.batch_id = s.batch_id
ORDER BY s.client_id, s.delivery_seq, s.batch_id

-- export_deliveries_by_seq --
-- Deliveries of client $1 by number ($2), whatever their state (replays, data-subject
-- requests).
SELECT client_id, seq, trigger, format, layout, cut_at, attempts, event_count, first_batch,
       last_batch, state, files::text AS files
FROM export_deliveries WHERE client_id = $1 AND seq = ANY($2::bigint[])
ORDER BY seq

-- export_failing_deliveries --
-- Deliveries failing for longer than $1 seconds that no notice told about yet: marked, with
-- a notice for clients with a webhook (delivery.failing); how many.
WITH marked AS (
    UPDATE export_deliveries
    SET failure_noticed = true
    WHERE state = 'pending' AND NOT failure_noticed
      AND first_failed_at < now() - make_interval(secs => $1)
    RETURNING client_id, seq, first_failed_at, last_error, attempts, event_count
), noticed AS (
    INSERT INTO export_notices (client_id, kind, payload)
    SELECT m.client_id, 'delivery.failing',
           jsonb_build_object('delivery', m.seq, 'failing_since', m.first_failed_at,
                              'error', m.last_error, 'attempts', m.attempts,
                              'events', m.event_count)
    FROM marked m JOIN clients c ON c.client_id = m.client_id
    WHERE c.notify_url IS NOT NULL
)
SELECT count(*) FROM marked

-- export_dead_letter --
-- Deliveries failing for longer than $1 seconds are no longer retried by themselves (dead
-- letters, until retried by hand), with a notice for clients with a webhook; how many.
WITH dead AS (
    UPDATE export_deliveries
    SET state = 'dead', lease_owner = NULL, lease_until = NULL
    WHERE state = 'pending' AND first_failed_at < now() - make_interval(secs => $1)
      AND (lease_until IS NULL OR lease_until < now())
    RETURNING client_id, seq, first_failed_at, last_error, attempts, event_count
), noticed AS (
    INSERT INTO export_notices (client_id, kind, payload)
    SELECT d.client_id, 'delivery.dead_lettered',
           jsonb_build_object('delivery', d.seq, 'failing_since', d.first_failed_at,
                              'error', d.last_error, 'attempts', d.attempts,
                              'events', d.event_count)
    FROM dead d JOIN clients c ON c.client_id = d.client_id
    WHERE c.notify_url IS NOT NULL
)
SELECT count(*) FROM dead

-- export_retry_now --
-- Dead and failing deliveries of client $1 (every client when NULL) due again at once with
-- their failure clocks reset, and the clients' pauses lifted; how many deliveries.
WITH retried AS (
    UPDATE export_deliveries
    SET state = 'pending', next_attempt_at = now(), first_failed_at = NULL,
        failure_noticed = false
    WHERE (state = 'dead' OR (state = 'pending' AND last_error IS NOT NULL))
      AND ($1::text IS NULL OR client_id = $1::text)
      AND (lease_until IS NULL OR lease_until < now())
    RETURNING client_id
), unpaused AS (
    UPDATE export_destination_state
    SET paused_until = NULL
    WHERE ($1::text IS NULL OR client_id = $1::text) AND paused_until > now()
)
SELECT count(*) FROM retried

-- export_dead_letters --
-- Dead deliveries of client $1 (all when NULL), with their errors.
SELECT client_id, seq, trigger, format, first_batch, last_batch, event_count, attempts,
       last_error, first_failed_at, cut_at
FROM export_deliveries
WHERE state = 'dead' AND ($1::text IS NULL OR client_id = $1::text)
ORDER BY client_id, seq

-- export_delivered_clients --
SELECT DISTINCT client_id FROM export_deliveries WHERE state = 'delivered' ORDER BY client_id

-- export_purge --
-- Retention of one batch exported more than $1 seconds ago: its failed events, and those of
-- its events that lie in the DEFAULT partition (days without a partition of their own), are
-- deleted; its other events go with their day's partition (buffer_partitions_expired).
WITH batch AS (
    SELECT batch_id, after_xid, after_id, upto_xid, upto_id FROM export_batches
    WHERE state = 'exported' AND purged_at IS NULL
      AND exported_at < now() - make_interval(secs => $1)
    ORDER BY batch_id LIMIT 1
    FOR UPDATE SKIP LOCKED
), gone AS (
    -- Through the partitioned table, so that its DELETE trigger counts what goes (one on a
    -- partition alone fires none); each partition's (xid, id) index finds the range.
    DELETE FROM events_log e USING batch b
    WHERE (e.xid, e.id) > (b.after_xid, b.after_id) AND (e.xid, e.id) <= (b.upto_xid, b.upto_id)
      AND e.tableoid = 'events_log_default'::regclass
    RETURNING 1
), gone_failed AS (
    DELETE FROM failed_events f USING batch b
    WHERE f.xid > b.after_xid AND f.xid <= b.upto_xid
)
UPDATE export_batches x SET purged_at = now()
FROM batch
WHERE x.batch_id = batch.batch_id
RETURNING x.batch_id, (SELECT count(*) FROM gone) AS deleted

-- buffer_partitions_expired --
-- The day partitions of events_log that retention drops ($1: the retention in seconds, $2:
-- now), by name, oldest first: their day has ended and so has the next (whose rows
-- window_retries checks against them), and every row they hold lies at or before the end of the longest
-- run of batches, from the first, exported more than $1 seconds ago. Batches are
-- consecutive (xid, id) ranges from the start, and a row committed after a batch was
-- claimed has a higher xid than any the batch holds, so such a row keeps its partition.
WITH unsettled AS (
    SELECT min(batch_id) AS batch_id FROM export_batches
    WHERE state <> 'exported' OR exported_at >= now() - make_interval(secs => $1)
), horizon AS (
    SELECT b.upto_xid, b.upto_id FROM export_batches b, unsettled u
    WHERE u.batch_id IS NULL OR b.batch_id < u.batch_id
    ORDER BY b.batch_id DESC LIMIT 1
), parts AS (
    SELECT c.relname AS name,
           COALESCE(substring(bound FROM 'FROM \(''([^'']+)''\)')::timestamptz,
                    '-infinity') AS lower_bound,
           substring(bound FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_bound
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid,
    LATERAL pg_get_expr(c.relpartbound, c.oid) AS bound
    WHERE i.inhparent = 'events_log'::regclass AND bound <> 'DEFAULT'
)
SELECT p.name FROM parts p
WHERE p.upper_bound + interval '24 hours' <= $2::timestamptz
  AND NOT EXISTS (
      SELECT 1 FROM (
          SELECT xid, id FROM events_log e
          WHERE e.created_at >= p.lower_bound AND e.created_at < p.upper_bound
          ORDER BY xid DESC, id DESC LIMIT 1
      ) newest
      WHERE NOT EXISTS (SELECT 1 FROM horizon h
                        WHERE (newest.xid, newest.id) <= (h.upto_xid, h.upto_id))
  )
ORDER BY p.upper_bound

-- buffer_lock --
-- Dropping a partition locks events_log exclusively anyway; taken first, it keeps rows from
-- arriving between the last check and the drop.
LOCK TABLE events_log IN ACCESS EXCLUSIVE MODE

-- buffer_partition_drop --
-- Whether $1 was a day partition of events_log, now dropped.
SELECT events_log_drop_partition($1)

-- buffer_partition_add --
-- The partition of the UTC day $1 unless it exists: its name, or NULL.
SELECT events_log_add_partition($1::date)

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
-- Per client: deliveries cut and waiting, failing or given up (dead), delivered; events
-- exported but in no delivery yet (waiting for the client's schedule); the newest error.
WITH d AS (
    SELECT client_id,
           count(*) FILTER (WHERE state = 'pending') AS pending_deliveries,
           COALESCE(sum(event_count) FILTER (WHERE state = 'pending'), 0) AS pending_events,
           count(*) FILTER (WHERE state = 'delivered') AS delivered_deliveries,
           COALESCE(sum(event_count) FILTER (WHERE state = 'delivered'), 0)
               AS delivered_events,
           max(delivered_at) AS last_delivered_at,
           -- Pending deliveries whose last attempt failed, and the newest of their errors:
           -- a failure that pauses nobody (the raw object, not the client's bucket) shows.
           count(*) FILTER (WHERE state = 'pending' AND last_error IS NOT NULL)
               AS failing_deliveries,
           count(*) FILTER (WHERE state = 'dead') AS dead_deliveries,
           (array_agg(last_error ORDER BY next_attempt_at DESC)
                FILTER (WHERE state IN ('pending', 'dead') AND last_error IS NOT NULL))[1]
               AS delivery_error
    FROM export_deliveries GROUP BY client_id
), s AS (
    SELECT client_id, sum(event_count) AS waiting_events, min(batch_id) AS oldest_batch
    FROM export_shares WHERE delivery_seq IS NULL GROUP BY client_id
)
SELECT client_id, COALESCE(d.pending_deliveries, 0) AS pending_deliveries,
       COALESCE(d.pending_events, 0) AS pending_events,
       COALESCE(s.waiting_events, 0)::bigint AS waiting_events,
       COALESCE(d.delivered_deliveries, 0) AS delivered_deliveries,
       COALESCE(d.delivered_events, 0) AS delivered_events, d.last_delivered_at,
       COALESCE(d.failing_deliveries, 0) AS failing_deliveries,
       COALESCE(d.dead_deliveries, 0) AS dead_deliveries, d.delivery_error,
       (SELECT claimed_at FROM export_batches WHERE batch_id = s.oldest_batch)
           AS oldest_waiting_claimed_at
FROM d FULL JOIN s USING (client_id)
ORDER BY client_id

-- export_client_schedules --
-- Every registered client's schedule, threshold, webhook (whether set) and cutting state.
SELECT c.client_id, c.export_schedule, c.export_threshold, c.notify_url IS NOT NULL AS notify,
       st.last_tick, st.delivery_requested_at
FROM clients c LEFT JOIN export_client_state st ON st.client_id = c.client_id
ORDER BY c.client_id

-- export_unprocessed_objects --
-- Raw objects that a delivery still waiting (cut or not) will read.
SELECT count(DISTINCT s.batch_id) AS objects
FROM export_shares s
LEFT JOIN export_deliveries d ON d.client_id = s.client_id AND d.seq = s.delivery_seq
WHERE s.delivery_seq IS NULL OR d.state = 'pending'

-- export_destination_states --
SELECT client_id, consecutive_failures, paused_until, last_error, last_failure_at,
       last_success_at, paused_until > now() AS paused
FROM export_destination_state ORDER BY client_id

-- scheduler_started --
-- A process starts running the export schedule ($1 runner, $2 role, $3 interval); rows of
-- schedulers silent for a week go, except the one that ran the newest round.
WITH pruned AS (
    DELETE FROM export_schedulers
    WHERE heartbeat_at < now() - interval '7 days'
      AND runner <> COALESCE((SELECT runner FROM export_schedulers
                              WHERE last_round_at IS NOT NULL
                              ORDER BY last_round_at DESC LIMIT 1), '')
)
INSERT INTO export_schedulers (runner, role, interval_s, next_due_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (runner) DO UPDATE
SET role = EXCLUDED.role, interval_s = EXCLUDED.interval_s, started_at = now(),
    heartbeat_at = now(), stopped_at = NULL, next_due_at = now()

-- scheduler_heartbeat --
UPDATE export_schedulers SET heartbeat_at = now() WHERE runner = $1

-- scheduler_round_started --
-- $2: what started it (schedule or threshold), counted as it starts.
UPDATE export_schedulers
SET round_started_at = now(), heartbeat_at = now(),
    triggers = jsonb_set(triggers, ARRAY[$2::text],
                         to_jsonb(COALESCE((triggers ->> $2::text)::int, 0) + 1))
WHERE runner = $1

-- scheduler_round_ended --
-- $2: the round's report (NULL when it failed), $3: its error, $4: seconds to the next.
UPDATE export_schedulers
SET round_started_at = NULL, heartbeat_at = now(),
    rounds = rounds + (CASE WHEN $2::jsonb IS NULL THEN 0 ELSE 1 END),
    last_round_at = CASE WHEN $2::jsonb IS NULL THEN last_round_at ELSE now() END,
    last_round = COALESCE($2::jsonb, last_round),
    last_error = $3,
    next_due_at = now() + make_interval(secs => $4)
WHERE runner = $1

-- scheduler_stopped --
UPDATE export_schedulers SET stopped_at = now(), round_started_at = NULL WHERE runner = $1

-- scheduler_states --
-- Every scheduler's row, with whether it runs now: not stopped, and heard from within $1
-- seconds (one that died without stopping falls silent).
SELECT runner, role, interval_s, started_at, heartbeat_at, stopped_at, rounds,
       triggers::text AS triggers, round_started_at, last_round_at,
       last_round::text AS last_round, last_error, next_due_at,
       stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => $1) AS running
FROM export_schedulers
ORDER BY runner

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
    OR EXISTS (SELECT 1 FROM export_shares WHERE client_id = $1)

-- gdpr_client_batches --
-- Every exported raw object holding events of the client ($1), with the delivery that holds
-- them (NULL until one is cut) and its format: a batch without a share of the client holds
-- none of its events.
SELECT b.batch_id, b.claimed_at, b.raw_key, s.delivery_seq, d.state AS delivery_state,
       d.format AS delivery_format
FROM export_shares s
JOIN export_batches b ON b.batch_id = s.batch_id
LEFT JOIN export_deliveries d ON d.client_id = s.client_id AND d.seq = s.delivery_seq
WHERE s.client_id = $1 AND b.state = 'exported'
ORDER BY b.batch_id

-- gdpr_failed_batches --
-- Every exported batch whose backup failed-events file holds failed events of the client ($1).
SELECT batch_id, claimed_at
FROM export_batches
WHERE failed_clients @> ARRAY[$1::text] AND state = 'exported'
ORDER BY batch_id

-- gdpr_identity_links --
-- The alias links that touch a subject: its user-id forms ($2) or its visitor ids ($3).
SELECT previous_id, user_id, anonymous_id FROM identity_links
WHERE client_id = $1
  AND (previous_id = ANY($2::text[]) OR user_id = ANY($2::text[])
       OR anonymous_id = ANY($3::text[]))

-- gdpr_client_replays --
-- The client's replays: where each wrote (or is writing) which deliveries again.
SELECT replay_id, format, destination, seqs, done FROM export_replays WHERE client_id = $1
ORDER BY replay_id

-- gdpr_buffer_lines --
-- The subject's events still in the buffer (visitor ids $2, user ids $3), as raw export lines.
SELECT id, line FROM export_event_lines
WHERE client_id = $1 AND (visitor_id = ANY($2::text[]) OR user_id = ANY($3::text[]))
ORDER BY id

-- gdpr_buffer_failed_lines --
-- The subject's failed events still in the buffer, as the backup bucket's lines.
SELECT id, line FROM failed_event_lines
WHERE client_id = $1 AND (visitor_id = ANY($2::text[]) OR user_id = ANY($3::text[]))
ORDER BY id

-- gdpr_delete_buffer --
-- The subject's events, failed events and alias links, in one statement: (events, failed
-- events, links). The links go with the ids they tie ($2 and $3 both: see gdpr.subjects).
WITH gone AS (
    DELETE FROM events_log
    WHERE client_id = $1 AND (visitor_id = ANY($2::text[]) OR user_id = ANY($3::text[]))
    RETURNING 1
), gone_failed AS (
    DELETE FROM failed_events
    WHERE client_id = $1 AND (visitor_id = ANY($2::text[]) OR user_id = ANY($3::text[]))
    RETURNING 1
), gone_links AS (
    DELETE FROM identity_links
    WHERE client_id = $1
      AND (previous_id = ANY($3::text[]) OR user_id = ANY($3::text[])
           OR previous_id = ANY($2::text[]) OR anonymous_id = ANY($2::text[]))
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS events, (SELECT count(*) FROM gone_failed) AS failed,
       (SELECT count(*) FROM gone_links) AS links

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
SELECT b.batch_id, b.state, b.first_created_at, b.last_created_at, s.client_id,
       s.event_count
FROM export_batches b LEFT JOIN export_shares s USING (batch_id)
WHERE b.batch_id = ANY($1::bigint[])
   OR (b.state = 'exported' AND b.last_created_at >= $2 AND b.first_created_at < $3)
ORDER BY b.batch_id, s.client_id

-- replay_select --
-- Client $1's delivered deliveries holding a batch in [$2, $3] and one with events that
-- arrived in [$4, $5) (each bound open when NULL), by number.
SELECT DISTINCT d.seq
FROM export_deliveries d
JOIN export_shares s ON s.client_id = d.client_id AND s.delivery_seq = d.seq
JOIN export_batches b ON b.batch_id = s.batch_id
WHERE d.client_id = $1 AND d.state = 'delivered'
  AND ($2::bigint IS NULL OR s.batch_id >= $2::bigint)
  AND ($3::bigint IS NULL OR s.batch_id <= $3::bigint)
  AND ($4::timestamptz IS NULL OR b.last_created_at >= $4::timestamptz)
  AND ($5::timestamptz IS NULL OR b.first_created_at < $5::timestamptz)
ORDER BY d.seq

-- replay_insert --
-- A replay of the deliveries $8, in format $2 (NULL: the client's now, or $9 when it has
-- none); one that selected nothing is finished at once.
INSERT INTO export_replays (client_id, format, destination, since, until, from_batch,
                            to_batch, seqs, state, finished_at)
VALUES ($1, COALESCE($2, (SELECT export_format FROM clients WHERE client_id = $1), $9), $3,
        $4, $5, $6, $7, $8,
        CASE WHEN cardinality($8::bigint[]) = 0 THEN 'finished' ELSE 'running' END,
        CASE WHEN cardinality($8::bigint[]) = 0 THEN now() END)
RETURNING replay_id, format

-- replay_lease --
-- A running replay that is due ($3: only this one), leased to $1 for $2 seconds.
UPDATE export_replays r
SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), attempts = r.attempts + 1
WHERE r.replay_id = (
    SELECT replay_id FROM export_replays
    WHERE state = 'running' AND next_attempt_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
      AND ($3::bigint IS NULL OR replay_id = $3::bigint)
    ORDER BY replay_id LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING r.replay_id, r.client_id, r.format, r.destination, r.seqs, r.done, r.attempts

-- replay_progress --
-- $2 of the replay's deliveries written; the lease is renewed for $4 seconds while ours.
UPDATE export_replays
SET done = $2, lease_until = now() + make_interval(secs => $4), last_error = NULL
WHERE replay_id = $1 AND lease_owner = $3 AND state = 'running'
RETURNING replay_id

-- replay_finished --
-- The replay is finished (while ours), with a notice for a client with a webhook
-- (replay.finished); whether it was ours to finish.
WITH done AS (
    UPDATE export_replays
    SET state = 'finished', finished_at = now(), done = cardinality(seqs), lease_owner = NULL,
        lease_until = NULL, last_error = NULL
    WHERE replay_id = $1 AND lease_owner = $2 AND state = 'running'
    RETURNING replay_id, client_id, format, destination, cardinality(seqs) AS deliveries,
              since, until, from_batch, to_batch, created_at
), noticed AS (
    INSERT INTO export_notices (client_id, kind, payload)
    SELECT d.client_id, 'replay.finished',
           jsonb_build_object('replay', d.replay_id, 'format', d.format,
                              'destination', d.destination, 'deliveries', d.deliveries,
                              'since', d.since, 'until', d.until,
                              'from_batch', d.from_batch, 'to_batch', d.to_batch,
                              'requested_at', d.created_at)
    FROM done d JOIN clients c ON c.client_id = d.client_id
    WHERE c.notify_url IS NOT NULL
)
SELECT EXISTS (SELECT 1 FROM done)

-- replay_failed --
UPDATE export_replays
SET last_error = $3, next_attempt_at = now() + make_interval(secs => $4), lease_owner = NULL,
    lease_until = NULL
WHERE replay_id = $1 AND lease_owner = $2 AND state = 'running'

-- replay_list --
-- Replays, newest first: one ($1), one client's ($2) or all.
SELECT replay_id, client_id, format, destination, since, until, from_batch, to_batch,
       cardinality(seqs) AS deliveries, done, state, created_at, finished_at, attempts,
       last_error, next_attempt_at
FROM export_replays
WHERE ($1::bigint IS NULL OR replay_id = $1::bigint)
  AND ($2::text IS NULL OR client_id = $2::text)
ORDER BY replay_id DESC
LIMIT $3

-- replay_retry_now --
-- Failing replays of client $1 (all when NULL) due again at once; how many.
WITH retried AS (
    UPDATE export_replays SET next_attempt_at = now()
    WHERE state = 'running' AND last_error IS NOT NULL
      AND ($1::text IS NULL OR client_id = $1::text)
    RETURNING replay_id
)
SELECT count(*) FROM retried

-- notice_lease --
-- Up to $2 due notices, oldest first, leased for $1 seconds.
UPDATE export_notices n
SET lease_until = now() + make_interval(secs => $1), attempts = n.attempts + 1
FROM (
    SELECT notice_id FROM export_notices
    WHERE state = 'pending' AND next_attempt_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY created_at LIMIT $2
    FOR UPDATE SKIP LOCKED
) picked
WHERE n.notice_id = picked.notice_id
RETURNING n.notice_id, n.client_id, n.kind, n.payload::text AS payload, n.created_at,
          n.attempts

-- notice_attempted --
-- One attempt at sending a notice: its log line, and the notice sent ($3), given up ($7) or
-- due again in $6 seconds.
WITH attempt AS (
    INSERT INTO export_notice_attempts (notice_id, attempt, status, error, seconds)
    VALUES ($1, $2, $4, $5, $8)
)
UPDATE export_notices
SET state = CASE WHEN $3 THEN 'sent' WHEN $7 THEN 'failed' ELSE 'pending' END,
    sent_at = CASE WHEN $3 THEN now() END, last_status = $4, last_error = $5,
    next_attempt_at = now() + make_interval(secs => $6), lease_until = NULL
WHERE notice_id = $1

-- notice_list --
-- Notices of client $1 (all when NULL), newest first, with their attempts.
SELECT n.notice_id, n.client_id, n.kind, n.payload::text AS payload, n.created_at, n.state,
       n.attempts, n.sent_at, n.last_status, n.last_error, n.next_attempt_at,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                     'attempt', a.attempt, 'attempted_at', a.attempted_at,
                     'status', a.status, 'error', a.error, 'seconds', a.seconds)
                 ORDER BY a.attempt)
                 FROM export_notice_attempts a WHERE a.notice_id = n.notice_id),
                '[]')::text AS log
FROM export_notices n
WHERE $1::text IS NULL OR n.client_id = $1::text
ORDER BY n.created_at DESC
LIMIT $2
