-- wrk script: POST /collect with a batch envelope of EVENTS inner events (0 = single event),
-- or with API=segment, POST /v1/batch with EVENTS Segment track messages, authenticated with
-- AUTHORIZATION (the client's write key as HTTP Basic, as the SDKs send it).
-- Each request gets fresh event ids so nothing is deduplicated away.
local events = tonumber(os.getenv("EVENTS") or "0")
local site = os.getenv("SITE") or "localhost"
local api = os.getenv("API") or "collect"
local authorization = os.getenv("AUTHORIZATION")
-- A browser's user agent and a public client address (loopback is a trusted proxy, so the
-- collector believes X-Forwarded-For), so that enrichment does the work it does for real
-- visitors: a user-agent parse and a geo lookup (cached) on every request.
local user_agent = os.getenv("USER_AGENT") or
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " ..
  "Chrome/124.0.0.0 Safari/537.36"
local client_ip = os.getenv("CLIENT_IP") or "81.2.69.160"

local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  -- Every run and thread draws different ids; identical sequences across runs would be
  -- deduplicated by the collector and show up as "lost" events.
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  nonce = math.random(0, 0xfff)
end

local function uuid()
  counter = counter + 1
  return string.format("%08x-%04x-4%03x-8%03x-%012x",
    math.random(0, 0xffffffff), tid or 0, nonce, math.random(0, 0xfff), counter)
end

local function inner(i)
  return string.format(
    '{"eventType":"click","eventId":"%s","timestamp":"2025-07-11T12:00:%02d.%03dZ",' ..
    '"eventData":{"element":"button%d","x":%d,"y":%d}}', uuid(), i % 60, i, i, i * 7, i * 3)
end

-- A server forwarding what a browser did, as Segment's SDKs send it: the page, the visitor's
-- user agent and address in each message's context.
local function message(i)
  return string.format(
    '{"type":"track","messageId":"%s","anonymousId":"anon_bench","userId":"user_bench",' ..
    '"event":"Clicked","timestamp":"2025-07-11T12:00:%02d.%03dZ",' ..
    '"properties":{"element":"button%d","x":%d,"y":%d},' ..
    '"context":{"page":{"url":"https://%s/page","path":"/page"},"userAgent":"%s","ip":"%s"}}',
    uuid(), i % 60, i, i, i * 7, i * 3, site, user_agent, client_ip)
end

local function segment_request()
  local parts = {}
  for i = 1, events do parts[i] = message(i) end
  return wrk.format("POST", "/v1/batch",
    {["Content-Type"] = "application/json", ["Authorization"] = authorization},
    '{"batch":[' .. table.concat(parts, ",") .. ']}')
end

function request()
  if api == "segment" then return segment_request() end
  local body
  if events == 0 then
    body = string.format(
      '{"eventType":"pageview","eventId":"%s","sessionId":"sess_bench","visitorId":"vis_bench",' ..
      '"siteId":"%s","timestamp":"2025-07-11T12:00:00Z","url":"https://%s/page?x=1",' ..
      '"path":"/page","attribution":{"utmParams":{"utm_source":"google","utm_medium":"cpc"}}}',
      uuid(), site, site)
  else
    local parts = {}
    for i = 1, events do parts[i] = inner(i) end
    body = string.format(
      '{"eventType":"batch","eventId":"%s","sessionId":"sess_bench","visitorId":"vis_bench",' ..
      '"siteId":"%s","timestamp":"2025-07-11T12:00:00Z","url":"https://%s/page",' ..
      '"path":"/page","events":[%s]}', uuid(), site, site, table.concat(parts, ","))
  end
  -- As a browser on the site's own page: the Origin is checked against the siteId's client.
  return wrk.format("POST", "/collect",
    {["Content-Type"] = "application/json", ["Origin"] = "http://" .. site,
     ["User-Agent"] = user_agent, ["X-Forwarded-For"] = client_ip}, body)
end

local non2xx = 0
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_s=%.3f p50_ms=%.2f p99_ms=%.2f " ..
    "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
