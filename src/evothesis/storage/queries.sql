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
