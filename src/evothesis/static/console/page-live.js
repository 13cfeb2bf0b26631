// Live events: the newest stored events, polled every two seconds, filterable by client,
// site and event type; each row shows exactly what /events/recent answers, which is what
// was stored (after the client's privacy rules and redaction), never more.

import { get, segment } from "./api.js";
import { clear, details, el, every, field, messages, moment, section } from "./dom.js";

const LIMIT = 50;
const TYPES = ["pageview", "click", "scroll", "form_focus", "form_submit", "outbound_click", "download", "custom", "batch"];

export async function render(root, context) {
  const status = messages();
  const filters = new URLSearchParams(location.search);
  const chosen = {
    client_id: filters.get("client_id") || "",
    site_id: filters.get("site_id") || "",
    event_type: filters.get("event_type") || "",
  };

  let clientControl;
  if (context.may_administer) {
    const clients = await get("/api/v1/clients").catch(() => []);
    clientControl = el(
      "select",
      { name: "client_id" },
      el("option", { value: "" }, "Every client"),
      clients.map((c) => el("option", { value: c.client_id, selected: c.client_id === chosen.client_id }, c.client_id)),
    );
  } else {
    clientControl = el("input", { type: "text", name: "client_id", value: chosen.client_id, autocomplete: "off" });
  }
  const siteControl = el("input", { type: "text", name: "site_id", value: chosen.site_id, autocomplete: "off", spellcheck: "false" });
  const typeControl = el("input", { type: "text", name: "event_type", value: chosen.event_type, list: "event-types", autocomplete: "off" });
  const form = el(
    "form",
    { class: "card filters", method: "get", action: "/console/live" },
    field("Client", clientControl),
    field("Site", siteControl, "A host, e.g. shop.acme.com."),
    field("Event type", typeControl),
    el("datalist", { id: "event-types" }, TYPES.map((type) => el("option", { value: type }))),
    el("button", { type: "submit" }, "Filter"),
  );

  const pause = el("button", { type: "button", class: "secondary", "aria-pressed": "false" }, "Pause updates");
  const state = el("p", { class: "help", id: "live-state" }, "Updating every 2 seconds.");
  const list = el("div");
  clear(root).append(
    status,
    section("Filters", form),
    section(
      "Newest events",
      el("div", { class: "actions" }, pause, state),
      el("p", { class: "help" }, "Rows are the stored events as /events/recent answers them: after privacy rules and redaction. Events leave the buffer some hours after their export (BUFFER_RETENTION)."),
      list,
    ),
  );

  const seen = new Map();
  let paused = false;
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume updates" : "Pause updates";
    state.textContent = paused ? "Updates paused." : "Updating every 2 seconds.";
  });

  function row(event) {
    return el(
      "tr",
      { "data-event-id": event.event_id },
      el("th", { scope: "row" }, moment(event.created_at)),
      el("td", {}, el("a", { href: `/console/clients/${segment(event.client_id)}` }, event.client_id)),
      el("td", {}, event.site_id),
      el("td", {}, event.event_type),
      el("td", {}, el("span", { class: "detail" }, event.visitor_id || "—")),
      el("td", {}, el("span", { class: "detail" }, event.path || event.url || "—")),
      el("td", {}, event.source || "—"),
      el("td", {}, details("Stored row", event)),
    );
  }

  const body = el("tbody");
  const tableNode = el(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Newest events" },
    el(
      "table",
      { class: "events" },
      el("caption", {}, "Newest events first"),
      el(
        "thead",
        {},
        el("tr", {}, ["Received", "Client", "Site", "Type", "Visitor", "Page", "Source", "As stored"].map((label) => el("th", { scope: "col" }, label))),
      ),
      body,
    ),
  );
  const none = el("p", { class: "empty" }, "No events match yet; new ones appear here as they are stored.");

  async function refresh() {
    if (paused) return;
    const events = await get("/events/recent", { limit: LIMIT, ...chosen });
    // Newest first: rows not shown yet go on top, so an open "As stored" stays open.
    const fresh = events.filter((event) => !seen.has(event.id));
    for (const event of fresh.reverse()) {
      const node = row(event);
      seen.set(event.id, node);
      body.prepend(node);
    }
    const keep = new Set(events.map((event) => event.id));
    for (const [eventId, node] of seen) {
      if (!keep.has(eventId)) {
        node.remove();
        seen.delete(eventId);
      }
    }
    clear(list).append(seen.size ? tableNode : none);
  }

  try {
    await refresh();
  } catch (error) {
    status.show("error", error.message);
  }
  every(2, refresh);
}
