// Data-subject requests: a visitor's events exported (downloaded) or deleted everywhere
// (POST /api/v1/gdpr/export, /delete), and the audit log of both with their receipts.

import { api, get, post } from "./api.js";
import { clear, details, el, field, messages, moment, number, section, table } from "./dom.js";

function download(blob, name) {
  const link = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

function filename(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : fallback;
}

export async function render(root, context) {
  const status = messages();
  clear(root).append(status);
  if (!context.may_administer) {
    root.append(el("p", { class: "message info" }, "Data-subject requests need the admin token; this session only reads."));
    return;
  }
  const clients = await get("/api/v1/clients");
  const clientControl = el(
    "select",
    { name: "client_id", required: true },
    clients.map((c) => el("option", { value: c.client_id }, c.client_id)),
  );
  const visitorControl = el("input", { type: "text", name: "visitor_id", required: true, maxlength: 1000, autocomplete: "off", spellcheck: "false" });
  const receipt = el("div", { class: "receipt" });
  const audit = el("div");

  function subject() {
    if (!form.reportValidity()) return null;
    return { client_id: clientControl.value, visitor_id: visitorControl.value };
  }

  async function exportEvents() {
    const body = subject();
    if (!body) return;
    status.show("info", "Exporting…");
    try {
      const response = await api("POST", "/api/v1/gdpr/export", { json: body, raw: true });
      const name = filename(response, "visitor-export.jsonl");
      download(await response.blob(), name);
      const events = response.headers.get("X-Event-Count");
      const failed = response.headers.get("X-Failed-Event-Count");
      const request = response.headers.get("X-Request-Id");
      status.show("success", `Exported ${number(Number(events))} event(s) and ${number(Number(failed))} failed event(s) of ${body.visitor_id} as ${name} (request ${request}).`);
      clear(receipt);
    } catch (error) {
      status.show("error", `Not exported: ${error.message}`);
    }
    await refresh();
  }

  async function deleteEvents() {
    const body = subject();
    if (!body) return;
    if (!confirm(`Delete every event of visitor ${body.visitor_id} of ${body.client_id}, from the buffer, the raw objects and the client's files? This cannot be undone.`)) return;
    status.show("info", "Deleting (this waits for running exports)…");
    try {
      const answer = await post("/api/v1/gdpr/delete", body);
      status.show("success", `Deleted. Request ${answer.request_id ?? ""}: the receipt is below and in the backup bucket.`);
      clear(receipt).append(details("Receipt", answer));
      receipt.querySelector("details").open = true;
    } catch (error) {
      status.show("error", `Not deleted: ${error.message}`);
    }
    await refresh();
  }

  const form = el(
    "form",
    { class: "card", onsubmit: (event) => { event.preventDefault(); exportEvents(); } },
    field("Client", clientControl),
    field("Visitor id", visitorControl, "The visitorId the tracker or the site sent (visitor ids are per client)."),
    el(
      "div",
      { class: "actions" },
      el("button", { type: "submit" }, "Export events (download)"),
      el("button", { type: "button", class: "danger", onclick: deleteEvents }, "Delete events…"),
    ),
  );

  async function refresh() {
    const entries = await get("/api/v1/gdpr/audit", { limit: 50 });
    clear(audit).append(
      table({
        caption: "Audit log, newest first",
        rows: entries,
        empty: "No data-subject request yet.",
        columns: [
          { label: "Recorded", cell: (row) => moment(row.recorded_at) },
          { label: "Kind", cell: (row) => row.kind },
          { label: "Step", cell: (row) => row.step },
          { label: "Client", cell: (row) => row.client_id },
          { label: "Visitor (SHA-256)", cell: (row) => el("code", { class: "detail" }, row.visitor_sha256.slice(0, 16)) },
          { label: "Request", cell: (row) => el("code", { class: "detail" }, String(row.request_id)) },
          { label: "Receipt", cell: (row) => (row.receipt ? details("Receipt", row.receipt) : "—") },
        ],
      }),
    );
  }

  root.append(section("A visitor's events", form, receipt), section("Receipts", audit));
  await refresh();
}
