// Clients: every client with its state, privacy level, format, delivery schedule,
// destination health and today's events; and the form that creates one (from the admin API's ClientCreate).

import { get, post, segment } from "./api.js";
import { FormError, settingsForm } from "./form.js";
import { badge, clear, copyButton, el, field, messages, number, section, table } from "./dom.js";

/** How a client's deliveries are doing, from /process/status. */
export function destinationHealth(delivery) {
  if (!delivery) return [badge("neutral", "No deliveries yet")];
  if (delivery.paused) {
    return [badge("error", "Paused"), " ", el("span", { class: "detail" }, delivery.last_error || "")];
  }
  if (delivery.failing_deliveries) {
    return [badge("warning", `${delivery.failing_deliveries} delivery(ies) failing`), " ", el("span", { class: "detail" }, delivery.delivery_error || "")];
  }
  if (delivery.dead_deliveries) {
    return [badge("error", `${delivery.dead_deliveries} dead letter(s)`), " ", el("span", { class: "detail" }, delivery.delivery_error || "")];
  }
  if (delivery.pending_deliveries) return [badge("neutral", `${delivery.pending_deliveries} delivery(ies) waiting`)];
  return [badge("success", "Delivering")];
}

function writeKeyNotice(record, writeKey, status) {
  const keyField = el("input", { type: "text", readonly: true, value: writeKey, class: "secret", id: "new-write-key" });
  return el(
    "div",
    { class: "message success", role: "alert" },
    el("p", {}, `Client ${record.client_id} was created. Its write key is shown this once: keep it now.`),
    field("Write key", keyField, "Servers send it as X-Write-Key; only its digest is stored."),
    copyButton(keyField, "write key", status),
    el(
      "p",
      {},
      "Next: ",
      el("a", { href: `/console/clients/${segment(record.client_id)}/install` }, `install ${record.client_id}'s tag`),
      " or ",
      el("a", { href: `/console/clients/${segment(record.client_id)}/domains` }, "manage its domains"),
      ".",
    ),
  );
}

export async function render(root, context) {
  const status = messages();
  const listArea = el("div");
  clear(root).append(status);
  if (!context.may_administer) {
    root.append(
      el("p", { class: "message info" }, "Listing and managing clients needs the admin token; this session only reads. Live events and the pipeline are open to it."),
    );
    return;
  }
  root.append(section("All clients", listArea));

  async function refresh() {
    const today = context.today;
    const [clients, process, usage] = await Promise.all([
      get("/api/v1/clients"),
      get("/process/status"),
      get("/billing/usage", { from: today, to: today }).catch((error) => ({ error })),
    ]);
    const deliveries = new Map(process.clients.map((row) => [row.client_id, row]));
    const todays = new Map((usage.clients || []).map((row) => [row.client_id, row.totals.accepted_events]));
    clear(listArea).append(
      table({
        caption: "Clients",
        rows: clients,
        rowKey: (row) => row.client_id,
        empty: "No clients yet: create the first one below.",
        columns: [
          {
            label: "Client",
            cell: (row) => [el("a", { href: `/console/clients/${segment(row.client_id)}` }, row.client_id), el("span", { class: "detail" }, row.name)],
          },
          { label: "Status", cell: (row) => (row.active ? badge("success", "Active") : badge("neutral", "Inactive")) },
          { label: "Privacy", cell: (row) => row.privacy_level },
          { label: "Format", cell: (row) => row.export_format },
          { label: "Schedule", cell: (row) => row.export_schedule || `${process.default_schedule} (default)` },
          { label: "Destination", cell: (row) => row.export_destination || "operator's processed bucket" },
          { label: "Destination health", cell: (row) => destinationHealth(deliveries.get(row.client_id)) },
          {
            label: "Events today",
            numeric: true,
            cell: (row) => (usage.error ? "—" : number(todays.get(row.client_id) || 0)),
          },
          { label: "Domains", cell: (row) => row.domains.join(", ") || "none" },
        ],
      }),
      el(
        "p",
        { class: "help" },
        usage.error
          ? `Today's events could not be read: ${usage.error.message}`
          : `Events today: accepted events exported today (UTC), from the metering records billing reads (${context.today}).`,
      ),
    );
  }

  const schema = context.client_schemas.create;
  const form = settingsForm(schema, { mode: "create" });
  const created = el("div");
  const formNode = el(
    "form",
    {
      class: "card",
      novalidate: false,
      onsubmit: async (event) => {
        event.preventDefault();
        status.clearMessage();
        let values;
        try {
          values = form.values();
        } catch (error) {
          if (error instanceof FormError) return status.show("error", error.message);
          throw error;
        }
        try {
          const record = await post("/api/v1/clients", values);
          clear(created).append(writeKeyNotice(record, record.write_key, status));
          formNode.reset();
          await refresh();
          created.querySelector("input")?.focus();
        } catch (error) {
          status.show("error", `The client was not created: ${error.message}`);
        }
      },
    },
    form.element,
    el("button", { type: "submit" }, "Create client"),
  );
  root.append(section("New client", created, formNode));
  await refresh();
}
