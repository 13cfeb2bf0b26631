/*
 * Evothesis tracker: records what visitors do on a site and sends it, in batches, to the
 * site owner's own Evothesis collector.
 *
 * Design goals, in order:
 *  1. Never hurt the host page. Every handler runs inside `safe()`, so an error in here is
 *     caught and (in debug mode) logged, never thrown into the site's code.
 *  2. Privacy by construction. No fingerprinting: identifiers are random ids kept in
 *     first-party storage. Form events carry field names, never values; selection and copy
 *     events carry lengths, never text; e-mail-like strings and sensitive query parameters
 *     are redacted before anything leaves the browser (or reaches localStorage). With
 *     `honour_dnt`, DNT/GPC visitors cause no network traffic and no storage at all.
 *  3. Nothing accepted is lost. Batches are persisted in localStorage until the collector
 *     answers 2xx; failures are retried with backoff, one request at a time, reusing the
 *     same event ids so the collector can deduplicate.
 *  4. Small and dependency-free. Plain ES2017, no build step; the server minifies it.
 *
 * Configuration: `window.__EVOTHESIS_EMBEDDED__` (prepended by the server from the client's
 * settings; authoritative for client_id and privacy) merged with `window.EvothesisConfig`
 * (set by the page; tunes batching, endpoint, custom fields, debug).
 *
 * Public API (the only global): window.evothesis = {track, flush, consent, getStats, version}.
 */
(function () {
  'use strict';

  var w = window, d = document, nav = navigator;
  // Loaded twice (two snippets, or a tag manager replaying tags)? Keep the first instance,
  // otherwise every event would be counted twice.
  if (w.evothesis && w.evothesis.getStats) return;

  var VERSION = '1.0.0';
  var SESSION_TIMEOUT = 30 * 60 * 1000; // Same inactivity window as GA/Plausible sessions.
  var IDLE_FLUSH = 60 * 1000;
  var MAX_BACKOFF = 60 * 1000;
  var MAX_STORED_BATCHES = 50, MAX_STORED_EVENTS = 500; // Bound localStorage use (~150 KB).
  var MAX_EVENT_CHARS = 16000; // One oversized custom event must not poison a whole batch.
  var KEY_VISITOR = 'evo_vid', KEY_SESSION = 'evo_sess', KEY_CONSENT = 'evo_consent';
  var KEY_OUTBOX = 'evo_outbox';
  var REDACTED = '[redacted]';
  // E-mail addresses, also URL-encoded (%40), anywhere inside a string.
  var EMAIL_G = /[a-z0-9._%+-]+(?:@|%40)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/gi;
  var EMAIL = /[a-z0-9._%+-]+(?:@|%40)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/i;
  // Keys whose values are secrets whatever they look like (object keys and query params).
  var SENSITIVE = /passw|pwd|secret|token|^ssn$|cvv|cvc|card.?(?:num|no)|e-?mail/i;
  var DOWNLOAD = /\.(?:pdf|zip|gz|tgz|rar|7z|csv|tsv|txt|rtf|xlsx?|docx?|pptx?|odt|ods|key|pages|numbers|dmg|pkg|exe|msi|apk|iso|mp3|wav|wma|flac|mp4|mov|avi|wmv|mpe?g|webm|epub)$/i;
  var ACTIONABLE = 'a,button,input,select,textarea,label,summary,[role=button],[role=link],[onclick]';

  // ---- configuration --------------------------------------------------------------------

  var embedded = w.__EVOTHESIS_EMBEDDED__ || {};
  var page = w.EvothesisConfig || {};
  // The embedded object has done its job; removing it keeps `evothesis` the only global.
  try { delete w.__EVOTHESIS_EMBEDDED__; } catch (e) { /* non-configurable: harmless */ }

  // Page settings tune behaviour; the server's settings win for identity and privacy,
  // and for the two privacy switches the stricter of both wins.
  var cfg = Object.assign({}, embedded, page);
  cfg.client_id = embedded.client_id || page.client_id;
  cfg.privacy_mode = String(embedded.privacy_mode || embedded.privacy_level || page.privacy_mode || 'standard');
  var hipaa = cfg.privacy_mode === 'hipaa';
  // Unless told otherwise, the GDPR and HIPAA levels honour DNT/GPC (see DESIGN.md).
  var honourDnt = !!(embedded.honour_dnt || page.honour_dnt) ||
    (cfg.honour_dnt == null && /^(?:gdpr|hipaa)$/.test(cfg.privacy_mode));
  var consentRequired = !!(embedded.consent_required || page.consent_required);
  var customFields = {};
  try { customFields = jsonClone(Object.assign({}, embedded.custom_fields, page.custom_fields)); } catch (e) { /* cyclic */ }
  var debug = !!cfg.debug;
  var batchSize = Math.max(1, +cfg.batch_size || 10);
  var flushInterval = Math.max(100, +cfg.flush_interval || 5000);
  var siteId = String(cfg.site_id || location.hostname);
  // Default endpoint: the collector that served this script (works for
  // /pixel/<id>/tracking.js on a separate analytics host as well as for /tracking.js).
  var script = d.currentScript, endpoint = location.origin + '/collect';
  try {
    endpoint = new URL(cfg.endpoint || new URL(script.src).origin + '/collect', location.href).href;
  } catch (e) { /* inline or injected script without src, or a malformed endpoint */ }

  // ---- small helpers --------------------------------------------------------------------

  function warn(e) {
    if (debug) try { console.warn('[Evothesis]', e); } catch (x) { /* no console */ }
  }

  // Wrap a function so nothing it throws can reach the host page.
  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { warn(e); }
    };
  }

  function on(target, type, fn, capture) {
    target.addEventListener(type, safe(fn), capture ? { capture: true, passive: true } : { passive: true });
  }

  function now() { return Date.now(); }
  function iso() { return new Date().toISOString(); }

  function uuid() {
    var c = w.crypto;
    // randomUUID only exists in secure contexts (https, localhost); fall back to
    // getRandomValues, which exists everywhere, and to Math.random as a last resort.
    if (c && c.randomUUID) return c.randomUUID();
    var b = new Uint8Array(16), i;
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.random() * 256 | 0;
    b[6] = b[6] & 15 | 64; // version 4
    b[8] = b[8] & 63 | 128; // RFC 4122 variant
    var h = '';
    for (i = 0; i < 16; i++) h += (b[i] + 256).toString(16).slice(1);
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }

  // A deep copy through JSON: drops functions and DOM nodes, and throws on cycles, so a
  // caller's odd object fails here (one event dropped) instead of at send time (batch lost).
  function jsonClone(v) {
    return v == null ? v : JSON.parse(JSON.stringify(v));
  }

  // Redact in place: values under sensitive keys, and e-mail addresses in every string.
  function scrub(v, key) {
    if (key && SENSITIVE.test(key) && v != null && typeof v !== 'object') return REDACTED;
    if (typeof v === 'string') return v.replace(EMAIL_G, REDACTED);
    if (v && typeof v === 'object') for (var k in v) v[k] = scrub(v[k], k);
    return v;
  }

  // URLs get their query parameters checked one by one (values are URL-encoded, and a
  // parameter named "token" is a secret whatever its value). In HIPAA mode the query
  // string and fragment are dropped entirely, except campaign (utm_*) parameters.
  function cleanUrl(u) {
    if (!u) return u;
    var x;
    try { x = new URL(u, location.href); } catch (e) { return scrub(String(u)); }
    var p = x.searchParams, bad = [];
    p.forEach(function (v, k) {
      if (hipaa ? !/^utm_/.test(k) : SENSITIVE.test(k) || EMAIL.test(v)) bad.push(k);
    });
    bad.forEach(function (k) { if (hipaa) p.delete(k); else p.set(k, REDACTED); });
    if (hipaa) x.hash = '';
    return scrub(bad.length || hipaa ? x.href : String(u));
  }

  // ---- storage: localStorage, then a first-party cookie, then memory ---------------------

  var memory = {};

  function ls() {
    try { return w.localStorage; } catch (e) { return null; } // throws in sandboxed frames
  }

  function load(key) {
    try {
      var s = ls(), v = s && s.getItem(key);
      if (v != null) return v;
      var m = d.cookie.match(new RegExp('(?:^|; )' + key + '=([^;]*)'));
      if (m) return decodeURIComponent(m[1]);
    } catch (e) { warn(e); }
    return memory[key] == null ? null : memory[key];
  }

  function store(key, value) {
    memory[key] = value;
    try { ls().setItem(key, value); return; } catch (e) { /* unavailable or full */ }
    try {
      d.cookie = key + '=' + encodeURIComponent(value) + '; path=/; max-age=31536000; SameSite=Lax' +
        (location.protocol === 'https:' ? '; Secure' : '');
    } catch (e) { warn(e); }
  }

  function forget(key) {
    delete memory[key];
    try { ls().removeItem(key); } catch (e) { /* ignore */ }
    try { d.cookie = key + '=; path=/; max-age=0'; } catch (e) { /* ignore */ }
  }

  // ---- identity and consent -------------------------------------------------------------

  function visitorId() {
    var v = load(KEY_VISITOR);
    if (!v) store(KEY_VISITOR, v = 'vis_' + uuid());
    return v;
  }

  // The session lives in shared storage with its last-activity time, so all tabs of the
  // site share one session, and it rolls over after 30 minutes without events.
  function sessionId() {
    var s = null, t = now();
    try { s = JSON.parse(load(KEY_SESSION)); } catch (e) { /* corrupt: start anew */ }
    if (!s || !s.id || t - s.t > SESSION_TIMEOUT) s = { id: 'sess_' + uuid() };
    s.t = t;
    store(KEY_SESSION, JSON.stringify(s));
    return s.id;
  }

  var stored = load(KEY_CONSENT);
  var consentState = stored === '1' ? true : stored === '0' ? false : null;

  function dntSignal() {
    return nav.doNotTrack === '1' || w.doNotTrack === '1' || nav.globalPrivacyControl === true;
  }
  var silenced = honourDnt && dntSignal();

  // An explicit "no" is always respected; an explicit "yes" is needed only when required.
  function allowed() {
    return !silenced && consentState !== false && (!consentRequired || consentState === true);
  }

  // ---- queue, batches and sending -------------------------------------------------------

  var queue = [], queueSession = null;
  var outbox = []; // envelopes built and persisted, awaiting a 2xx
  var done = {}; // ids of envelopes this tab finished (sent or rejected)
  var inFlight = null, sending = null, draining = false, attempts = 0, retryTimer = 0, retryAfter = 0;
  var flushTimer = 0, idleTimer = 0;
  var stats = { sent: 0, batches: 0, dropped: 0, last: null };

  function count(list) {
    var n = 0;
    list.forEach(function (b) { n += b.events.length; });
    return n;
  }

  // Drop the oldest batches beyond the bounds; a long outage must not fill the disk.
  function trim(list, countDrops) {
    while (list.length > MAX_STORED_BATCHES || (list.length > 1 && count(list) > MAX_STORED_EVENTS)) {
      var old = list.shift();
      if (countDrops) stats.dropped += old.events.length;
    }
    return list;
  }

  // Persist unsent batches. Other tabs of the same site persist theirs under the same key,
  // so merge: keep what they stored, minus what this tab finished, plus this tab's own.
  function save() {
    var s = ls();
    if (!s) return;
    try {
      var mine = {}, list;
      outbox.forEach(function (b) { mine[b.eventId] = 1; });
      try { list = JSON.parse(s.getItem(KEY_OUTBOX)) || []; } catch (e) { list = []; }
      list = trim(list.filter(function (b) {
        return b && b.events && !mine[b.eventId] && !done[b.eventId];
      }).concat(outbox), false);
      if (list.length) s.setItem(KEY_OUTBOX, JSON.stringify(list));
      else s.removeItem(KEY_OUTBOX);
    } catch (e) { warn(e); }
  }

  function enqueue(e) {
    var size = JSON.stringify(e).length;
    if (size > MAX_EVENT_CHARS) { stats.dropped++; warn('event too large: ' + e.eventType); return; }
    var s = sessionId();
    // Inner events inherit the envelope's session, so never mix two sessions in one batch.
    if (queue.length && s !== queueSession) flush();
    queueSession = s;
    queue.push(e);
    clearTimeout(idleTimer);
    if (queue.length >= batchSize) { flush(); pump(); return; }
    // At most flush_interval after the first queued event, and 60 s after the last one.
    if (!flushTimer) flushTimer = setTimeout(safe(function () { flush(); pump(); }), flushInterval);
    idleTimer = setTimeout(safe(function () { flush(); pump(); }), IDLE_FLUSH);
  }

  // Seal the queued events into one envelope and move it to the (persisted) outbox.
  function flush() {
    clearTimeout(flushTimer);
    clearTimeout(idleTimer);
    flushTimer = idleTimer = 0;
    if (!queue.length) return;
    var env = {
      eventType: 'batch', eventId: uuid(), sessionId: queueSession, visitorId: visitorId(),
      siteId: siteId, timestamp: iso(), url: current.url, path: current.path,
      referrer: landingReferrer
    };
    if (consentState !== null) env.consent = consentState;
    env.events = queue;
    queue = [];
    outbox.push(scrub(env));
    trim(outbox, true);
    save();
  }

  function finish(b, ok) {
    var i = outbox.indexOf(b);
    if (i >= 0) outbox.splice(i, 1);
    done[b.eventId] = 1;
    if (ok) {
      stats.sent += b.events.length;
      stats.batches++;
      stats.last = iso();
    } else {
      stats.dropped += b.events.length;
    }
  }

  // POST one envelope. text/plain is a CORS "simple" content type, so a cross-origin
  // collector needs no preflight; keepalive lets the request outlive the page.
  // Resolves to the HTTP status, or 0 when no answer came (offline, DNS, CORS, ...).
  async function post(b) {
    var body = JSON.stringify(b);
    try {
      var r = await fetch(endpoint, {
        method: 'POST', body: body, credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' },
        // Browsers cap keepalive bodies at 64 KB in total; retries happen while the page
        // is alive, so they do without it (a quota error must not become a retry loop).
        keepalive: !attempts && body.length < 20000
      });
      // Readable cross-origin only if the collector exposes it (Access-Control-Expose-Headers).
      retryAfter = parseFloat(r.headers.get('Retry-After')) || 0;
      return r.status;
    } catch (e) {
      warn(e);
      return 0;
    }
  }

  async function drain() {
    draining = true; // set and cleared synchronously, unlike the promise pump() hands out
    try {
      while (outbox.length) {
        var b = inFlight = outbox[0];
        var status = await post(b);
        inFlight = null;
        if (status >= 200 && status < 300) {
          finish(b, true);
        } else if (status >= 400 && status < 500 && status !== 429) {
          // The collector understood and refused (bad shape, unknown domain): resending
          // the same bytes cannot succeed.
          warn('batch rejected with HTTP ' + status);
          finish(b, false);
        } else {
          // Network error, 429 or 5xx: keep it, back off exponentially with jitter.
          attempts++;
          var delay = Math.min(MAX_BACKOFF, 1000 * Math.pow(2, attempts - 1));
          delay = Math.min(MAX_BACKOFF, Math.max(delay * (0.5 + Math.random() / 2), retryAfter * 1000));
          retryTimer = setTimeout(safe(function () { retryTimer = 0; pump(); }), delay);
          return false;
        }
        attempts = 0;
        save();
      }
      return true;
    } catch (e) {
      warn(e);
      return false;
    } finally {
      inFlight = null;
      draining = false;
    }
  }

  // Send the outbox one envelope at a time, oldest first. Only one request is ever in
  // flight, so a collector that is down sees one retry per backoff step, not a stampede.
  // Resolves true once the outbox is empty, false while batches wait for a retry.
  function pump(force) {
    if (force && retryTimer) { clearTimeout(retryTimer); retryTimer = 0; }
    if (draining) return sending;
    if (retryTimer) return Promise.resolve(false);
    return sending = drain();
  }

  // The page is being hidden and may never come back: hand everything to the browser via
  // sendBeacon, which survives unload. If the collector has been failing, keep the batches
  // persisted instead; the next page load (or this tab, if it returns) retries them.
  function beaconAll() {
    flush();
    if (attempts) return;
    outbox.slice().forEach(function (b) {
      if (b === inFlight) return;
      var body = JSON.stringify(b), ok = false;
      try { ok = nav.sendBeacon(endpoint, new Blob([body], { type: 'text/plain' })); } catch (e) { warn(e); }
      if (ok) return finish(b, true);
      // Beacon refused (too big, quota): fire a keepalive fetch and keep the batch; if
      // both arrive the collector drops the duplicate by event id.
      try {
        fetch(endpoint, { method: 'POST', body: body, keepalive: true, credentials: 'omit', headers: { 'Content-Type': 'text/plain' } })
          .catch(function () { /* retried later from storage */ });
      } catch (e) { warn(e); }
    });
    save();
  }

  // ---- events ---------------------------------------------------------------------------

  function track(type, data, extra) {
    if (!allowed()) { stats.dropped++; return; }
    var e = {
      eventType: type, eventId: uuid(), timestamp: iso(), url: current.url, path: current.path,
      eventData: Object.assign({}, customFields, data)
    };
    enqueue(scrub(Object.assign(e, extra)));
  }

  // State of the current (possibly virtual, in an SPA) page.
  var current = {};
  var landingReferrer = cleanUrl(d.referrer) || '';

  function startPage() {
    var t = now();
    current = {
      href: location.href.split('#')[0], url: cleanUrl(location.href), path: scrub(location.pathname),
      start: t, visible: 0, visibleSince: d.visibilityState === 'hidden' ? 0 : t,
      depths: {}, maxDepth: 0, exitSent: false
    };
  }

  function classify(refUrl, params, utm) {
    var medium = (utm.utm_medium || '').toLowerCase(), host = '';
    try { host = refUrl ? new URL(refUrl).hostname.toLowerCase() : ''; } catch (e) { /* bad referrer */ }
    if (/^(?:cpc|ppc|cpm|cpv|paid)/.test(medium) || params.has('gclid') || params.has('fbclid') || params.has('msclkid')) return 'paid';
    if (/e-?mail|newsletter/.test(medium) || /^(?:mail\.google\.com|outlook\.(?:live|office)\.com|mail\.yahoo\.com|mail\.proton\.me)$/.test(host)) return 'email';
    if (medium === 'social' || /(?:^|\.)(?:facebook|instagram|twitter|linkedin|reddit|pinterest|youtube|tiktok|tumblr|quora|threads|mastodon)\.[a-z.]+$|^(?:t\.co|x\.com|lnkd\.in|t\.me|bsky\.app|vk\.com|news\.ycombinator\.com)$/.test(host)) return 'social';
    if (medium === 'organic' || /(?:^|\.)(?:google|bing|yahoo|duckduckgo|baidu|yandex|ecosia|qwant|startpage|naver|seznam)\.[a-z.]+$|^search\.brave\.com$/.test(host)) return 'search';
    // A referrer from this same site is a continuation of the visit, not a referral.
    if (host && host !== location.hostname) return 'referral';
    return utm.utm_source ? 'referral' : 'direct';
  }

  function pageview(referrer) {
    var params = new URL(location.href).searchParams, utm = {};
    ['utm_source', 'utm_medium', 'utm_campaign', 'utm_term', 'utm_content'].forEach(function (k) {
      if (params.has(k)) utm[k] = params.get(k).slice(0, 200);
    });
    track('pageview', { title: d.title, referrer: referrer }, {
      referrer: referrer,
      attribution: { utmParams: utm, referrerClass: classify(referrer, params, utm) }
    });
  }

  function visibleTime() {
    return current.visible + (current.visibleSince ? now() - current.visibleSince : 0);
  }

  // Time on page, sent when the page is hidden or left. Sent again (with larger totals) if
  // the visitor comes back and leaves again; the last one per page is the final figure.
  function pageExit(reason) {
    if (current.exitSent) return;
    current.exitSent = true;
    track('page_exit', { timeOnPage: now() - current.start, visibleTime: visibleTime(), maxScrollDepth: current.maxDepth, reason: reason });
  }

  function describe(el, withText) {
    var tag = el.tagName.toLowerCase(), data = { tag: tag, element: tag + (el.id ? '#' + el.id : '') };
    if (el.id) data.id = el.id;
    var cls = (el.getAttribute('class') || '').trim(); // getAttribute: SVG className is an object
    if (cls) data.classes = cls.replace(/\s+/g, ' ');
    var type = (el.getAttribute('type') || '').toLowerCase();
    // Only buttons' values are labels; other inputs, text areas and editable regions hold
    // what the visitor typed (or data prefilled about them).
    var text = tag === 'input' ? (/^(?:submit|button|reset)$/.test(type) ? el.value : '') :
      withText && !el.isContentEditable && !/^(?:textarea|select)$/.test(tag) ? el.textContent : '';
    text = (text || '').replace(/\s+/g, ' ').trim().slice(0, 100);
    if (text && !hipaa) data.text = text;
    var href = el.getAttribute('href');
    if (href) data.href = cleanUrl(el.href && el.href.baseVal == null ? el.href : href);
    return data;
  }

  function onClick(ev) {
    var t = ev.target;
    if (!t || !t.closest || t.closest('[data-evothesis-ignore]')) return;
    if (ev.type === 'auxclick' && ev.button !== 1) return; // middle click opens links too
    var actionable = t.closest(ACTIONABLE), el = actionable || t;
    var link = t.closest('a[href],area[href]');
    if (ev.type === 'auxclick' && !link) return;
    // Text of a big container (a click on blank space) would be noise, so only elements
    // the visitor can act on, or leaves, contribute their text.
    var data = describe(el, !!actionable || !el.children.length), type = 'click';
    if (link) {
      var url;
      try { url = new URL(link.href, location.href); } catch (e) { url = null; }
      if (link !== el) data.href = cleanUrl(link.href);
      if (url && (link.hasAttribute('download') || DOWNLOAD.test(url.pathname))) type = 'download';
      else if (url && /^https?:$/.test(url.protocol) && url.host !== location.host) type = 'outbound_click';
    }
    track(type, data);
  }

  // getAttribute, because form.id is the *element* when the form has a field named "id".
  function formId(form) {
    return form ? form.getAttribute('id') || form.getAttribute('name') || null : null;
  }

  var lastFocus = null;
  function onFocus(ev) {
    var t = ev.target;
    if (!t || !/^(?:INPUT|SELECT|TEXTAREA)$/.test(t.tagName) || t.closest('[data-evothesis-ignore]')) return;
    // Focus comes back to the same field when the window regains focus; not a new action.
    if (t === lastFocus) return;
    lastFocus = t;
    track('form_focus', { formId: formId(t.form), field: t.name || t.id || null, fieldType: t.type || t.tagName.toLowerCase() });
  }

  function onSubmit(ev) {
    var form = ev.target, fields = [], seen = {};
    if (!form || !form.elements || form.closest('[data-evothesis-ignore]')) return;
    // Names and types only; the values are exactly what must never leave the browser.
    Array.prototype.forEach.call(form.elements, function (el) {
      var name = el.name;
      if (!name || seen[name] || /^(?:submit|button|reset|image|fieldset)$/.test(el.type) || el.tagName === 'FIELDSET') return;
      seen[name] = 1;
      fields.push({ name: name, type: el.type || el.tagName.toLowerCase() });
    });
    lastFocus = null;
    track('form_submit', { formId: formId(form), fields: fields });
  }

  function selectionLength() {
    var a = d.activeElement;
    // Text selected inside inputs is not part of window.getSelection() in all browsers.
    if (a && /^(?:INPUT|TEXTAREA)$/.test(a.tagName) && typeof a.selectionStart === 'number' && a.selectionEnd > a.selectionStart) {
      return a.selectionEnd - a.selectionStart;
    }
    var s = w.getSelection && w.getSelection();
    return s ? String(s).length : 0;
  }

  var selectTimer = 0, lastSelection = 0;
  function onSelection() {
    // selectionchange fires for every character while dragging; report once it settles.
    clearTimeout(selectTimer);
    selectTimer = setTimeout(safe(function () {
      var n = selectionLength();
      if (n && n !== lastSelection) track('text_selection', { length: n });
      lastSelection = n;
    }), 800);
  }

  var scrollTimer = 0;
  function checkScroll() {
    scrollTimer = 0;
    var el = d.documentElement, body = d.body;
    var height = Math.max(el.scrollHeight, body ? body.scrollHeight : 0);
    var seen = (w.pageYOffset || el.scrollTop || 0) + w.innerHeight;
    var pct = height - seen <= 2 ? 100 : Math.floor(seen / height * 100);
    if (pct > current.maxDepth) current.maxDepth = Math.min(100, pct);
    [25, 50, 75, 100].forEach(function (m) {
      if (pct >= m && !current.depths[m]) {
        current.depths[m] = 1;
        track('scroll', { depth: m });
      }
    });
  }

  function onScroll() {
    // Scroll events come at frame rate; layout is measured at most every 200 ms.
    if (!scrollTimer) scrollTimer = setTimeout(safe(checkScroll), 200);
  }

  function onVisibility() {
    var hidden = d.visibilityState === 'hidden', t = now();
    track('visibility_change', { state: hidden ? 'hidden' : 'visible' });
    if (hidden) {
      if (current.visibleSince) current.visible += t - current.visibleSince;
      current.visibleSince = 0;
      pageExit('hidden');
      beaconAll();
    } else {
      current.visibleSince = t;
      current.exitSent = false;
    }
  }

  // SPA navigation: a changed URL (ignoring the #fragment) is a new page view. The check
  // is deferred one tick so routers that set document.title right after pushState are seen.
  function onNavigate() {
    setTimeout(safe(function () {
      if (location.href.split('#')[0] === current.href) return;
      var previous = current.url;
      pageExit('navigation');
      startPage();
      lastFocus = null;
      pageview(previous);
    }), 0);
  }

  // ---- public API -----------------------------------------------------------------------

  var api = {
    version: VERSION,

    /** Record a custom event: evothesis.track('purchase', {value: 42}). */
    track: safe(function (name, data) {
      if (!name || typeof name !== 'string') return warn('track() needs an event name');
      try { data = jsonClone(data && typeof data === 'object' ? data : {}); } catch (e) {
        stats.dropped++;
        return warn(e); // cyclic or otherwise unserialisable data
      }
      track(name.slice(0, 100), data);
    }),

    /** Send everything queued now. Resolves true when nothing is left unsent. */
    flush: function () {
      try { flush(); return pump(true); } catch (e) { warn(e); return Promise.resolve(false); }
    },

    /**
     * Record the visitor's choice (kept in localStorage); without an argument, return it.
     * Revoking deletes the identifiers and everything not yet sent.
     */
    consent: safe(function (granted) {
      if (!arguments.length) return consentState;
      var before = allowed();
      consentState = !!granted;
      store(KEY_CONSENT, granted ? '1' : '0');
      if (!granted) {
        queue = [];
        outbox = [];
        [KEY_OUTBOX, KEY_VISITOR, KEY_SESSION].forEach(forget);
      } else if (!before && allowed()) {
        pageview(landingReferrer); // the page view dropped while waiting for consent
      }
      return consentState;
    }),

    getStats: function () {
      return {
        events_queued: queue.length + count(outbox),
        events_sent: stats.sent,
        batches_sent: stats.batches,
        avg_batch_size: stats.batches ? Math.round(stats.sent / stats.batches * 10) / 10 : 0,
        last_flush: stats.last,
        events_dropped: stats.dropped,
        batches_pending: outbox.length
      };
    }
  };
  w.evothesis = api;

  // ---- start ----------------------------------------------------------------------------

  safe(function () {
    console.log('[Evothesis] Analytics pixel loaded for client: ' + cfg.client_id);
    if (!cfg.client_id) warn('no client_id configured');
    if (silenced) return warn('Do Not Track / Global Privacy Control: tracking disabled');

    startPage();
    // Batches a previous page could not deliver (collector down, page closed mid-send).
    if (allowed()) {
      var s = ls(), prior = [];
      try { prior = (s && JSON.parse(s.getItem(KEY_OUTBOX))) || []; } catch (e) { /* corrupt */ }
      outbox = trim(prior.filter(function (b) { return b && b.events && b.eventId; }), true);
    }
    pageview(landingReferrer);

    on(d, 'click', onClick, true);
    on(d, 'auxclick', onClick, true);
    on(d, 'focusin', onFocus, true);
    on(d, 'submit', onSubmit, true);
    on(d, 'selectionchange', onSelection);
    on(d, 'copy', function () { track('copy', { length: selectionLength() }); }, true);
    on(w, 'scroll', onScroll);
    on(d, 'visibilitychange', onVisibility);
    on(w, 'focus', function () { track('focus', {}); });
    on(w, 'blur', function () { track('blur', {}); });
    on(w, 'pagehide', function () { pageExit('unload'); beaconAll(); });
    on(w, 'pageshow', function (ev) {
      // Restored from the back/forward cache: the visitor is looking at the page again.
      if (ev.persisted) { startPage(); pageview(landingReferrer); }
    });
    on(w, 'online', function () { pump(true); });
    on(w, 'popstate', onNavigate);
    ['pushState', 'replaceState'].forEach(function (m) {
      var original = history[m];
      if (typeof original !== 'function') return;
      history[m] = function () {
        var result = original.apply(this, arguments);
        safe(onNavigate)();
        return result;
      };
    });
    if (outbox.length) pump();
  })();
})();
