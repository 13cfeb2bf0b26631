// Install: the client's script tag, seed 001's generic tag (and the no-JavaScript pixel
// where this collector has one) to copy into its pages, and a check that turns green when
// its first event arrives.

import { get, segment } from "./api.js";
import { badge, clear, copyButton, el, every, field, messages, moment, section } from "./dom.js";

/** Where /pixel/ and /collect are served: EVOTHESIS_COLLECTOR_URL, else this origin. */
function collectorOrigin(context) {
  return (context.collector_url || location.origin).replace(/\/+$/, "");
}

function snippet(label, what, text, status, help) {
  const box = el("textarea", { readonly: true, rows: 4, class: "code", spellcheck: "false" }, text);
  return el("div", { class: "snippet" }, field(label, box, help), copyButton(box, what, status));
}

function pixelTag(origin, pixel, site) {
  const values = { siteId: site, site_id: site, eventType: "pageview", event_type: "pageview" };
  const query = new URLSearchParams();
  for (const name of pixel.query) if (name in values) query.set(name, values[name]);
  const text = query.toString();
  const source = `${origin}${pixel.path}${text ? `?${text}` : ""}`;
  return `<noscript><img src="${source.replaceAll("&", "&amp;")}" width="1" height="1" alt=""></noscript>`;
}

export async function render(root, context) {
  const id = context.client_id;
  const origin = collectorOrigin(context);
  const status = messages();
  clear(root).append(status);

  let record = null;
  if (context.may_administer) {
    try {
      record = await get(`/api/v1/clients/${segment(id)}`);
    } catch (error) {
      status.show("error", error.message);
    }
  }
  const domains = record ? record.domains : [];
  const sites = domains.length ? domains.join(", ") : "its domains";

  const tags = [
    snippet(
      "Script tag",
      "script tag",
      `<script src="${origin}/pixel/${segment(id)}/tracking.js" async></script>`,
      status,
      `Paste it into the <head> of every page of ${sites}. The tracker carries ${id}'s settings and sends to ${origin}/collect.`,
    ),
  ];
  tags.push(
    snippet(
      "Seed 001's tag (generic tracker)",
      "generic tag",
      `<script src="${origin}/js/tracking.js"></script>`,
      status,
      `The tag the seed documents: the same tracker without ${id}'s settings baked in. Its events go to ${origin}/collect, are attributed to ${id} by the page's domain and get ${id}'s privacy rules there; what the tracker does in the browser before sending (waiting for consent, honouring Do Not Track) follows only the tag above.`,
    ),
  );
  if (record && !record.active) {
    tags.unshift(el("p", { class: "message warning" }, `${id} is deactivated: its events are refused until it is activated.`));
  }
  if (context.noscript_pixel) {
    const exact = domains.filter((domain) => !domain.startsWith("*."));
    const site = exact[0] || (domains[0] ? `www.${domains[0].slice(2)}` : "your-site.example");
    tags.push(
      snippet(
        "No-JavaScript pixel",
        "pixel",
        pixelTag(origin, context.noscript_pixel, site),
        status,
        `For visitors without JavaScript: a pageview of ${site}, after the script tag; change the site for other domains.`,
      ),
    );
  }

  const check = el("div", { class: "first-event", role: "status", "aria-live": "polite" });
  const waiting = () =>
    clear(check).append(badge("neutral", "Waiting"), " ", `Waiting for the first event from ${sites}…`);
  waiting();
  root.append(section("Tag", tags), section("First event", check));

  let stop = null;
  async function look() {
    const rows = await get("/events/recent", { client_id: id, limit: 1 });
    if (!rows.length) return false;
    const [event] = rows;
    clear(check).append(
      el(
        "p",
        { class: "message success" },
        badge("success", "Receiving"),
        ` ${id} receives events: the newest arrived from ${event.site_id} at ${moment(event.created_at)}. `,
        el("a", { href: `/console/live?client_id=${segment(id)}` }, "See them in Live events"),
        ".",
      ),
    );
    stop?.();
    return true;
  }
  if (!(await look())) stop = every(2, look);
}
