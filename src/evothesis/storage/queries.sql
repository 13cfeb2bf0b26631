-- create_staging --
-- Per-connection staging table: COPY lands here, then one INSERT … ON CONFLICT moves the
-- rows into events_log so that retried event ids are skipped instead of failing the COPY.
CREATE TEMP TABLE IF NOT EXISTS events_staging
    ON COMMIT DELETE ROWS
    AS SELECT event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
              url, path, referrer, ip_address, user_agent, raw_event_data, created_at
       FROM events_log WITH NO DATA

-- move_staged_events --
-- Insert staged rows, skipping event ids already stored; report what was new per site.
WITH inserted AS (
    INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id, client_id,
                            "timestamp", url, path, referrer, ip_address, user_agent,
                            raw_event_data, created_at)
    SELECT event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
           url, path, referrer, ip_address, user_agent, raw_event_data, created_at
    FROM events_staging
    ON CONFLICT (event_id) DO NOTHING
    RETURNING client_id, site_id
)
SELECT client_id, site_id, count(*) AS inserted FROM inserted GROUP BY client_id, site_id

-- insert_audit --
-- A hipaa batch's audit record, once per request id (retries and spool replays repeat it).
INSERT INTO hipaa_audit_log (recorded_at, client_id, site_id, visitor_id, events, ip_hash,
                             origin, collector, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (request_id) DO NOTHING

-- count_events --
-- Total and per-client event counts in the buffer.
SELECT client_id, count(*) AS events FROM events_log GROUP BY client_id ORDER BY client_id

-- recent_events --
-- Newest events first, for debugging attribution.
SELECT id, event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp",
       url, path, referrer, ip_address, user_agent, raw_event_data, created_at
FROM events_log ORDER BY id DESC LIMIT $1

-- ping --
-- Cheapest proof that the database answers.
SELECT 1

-- registry_lookup --
-- Registered patterns among a host's candidates (exact first, then wildcards), with the
-- owning client's settings; the caller picks the most specific pattern.
SELECT d.domain, c.client_id, c.active, c.privacy_level, c.ip_collection, c.honour_dnt,
       c.consent_mode, c.ip_salt, c.write_key_sha256
FROM client_domains d JOIN clients c USING (client_id)
WHERE d.domain = ANY($1::text[])

-- client_insert --
INSERT INTO clients (client_id, name, privacy_level, ip_collection, honour_dnt, consent_mode,
                     ip_salt, write_key_sha256, export_destination, export_format,
                     export_credentials)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (client_id) DO NOTHING
RETURNING client_id

-- client_update --
-- Every field is written: the store merges changes into the current row first.
UPDATE clients
SET name = $2, privacy_level = $3, ip_collection = $4, honour_dnt = $5, consent_mode = $6,
    ip_salt = $7, write_key_sha256 = $8, export_destination = $9, export_format = $10,
    export_credentials = $11, active = $12, updated_at = now()
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
