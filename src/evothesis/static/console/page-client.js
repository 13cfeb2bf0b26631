// One client's settings (every setting of the admin API's ClientChanges) and actions:
// deactivate or activate, a new write key (shown once), and a test of its destination.

import { api, get, post, segment } from "./api.js";
import { FormError, settingsForm } from "./form.js";
import { badge, clear, copyButton, el, facts, field, messages, moment, section } from "./dom.js";

/** Settings with their own controls rather than a form field. */
const OWN_CONTROLS = ["active"];

export async function render(root, context) {
  const id = context.client_id;
  const base = `/api/v1/clients/${segment(id)}`;
  const status = messages();
  clear(root).append(status);
  if (!context.may_administer) {
    root.append(el("p", { class: "message info" }, "Client settings need the admin token; this session only reads."));
    return;
  }
  const summary = el("div");
  const settings = el("div");
  const actions = el("div", { class: "actions" });
  const secret = el("div");
  const probe = el("div", { class: "probe", role: "status", "aria-live": "polite" });
  root.append(section("Summary", summary), section("Settings", settings), section("Actions", secret, actions, probe));

  function show(record) {
    clear(summary).append(
      facts([
        ["Name", record.name],
        ["Status", record.active ? badge("success", "Active: events are accepted") : badge("neutral", "Inactive: events are refused")],
        ["Domains", el("a", { href: `/console/clients/${segment(id)}/domains` }, record.domains.join(", ") || "none yet")],
        ["Destination", record.export_destination || "the operator's processed bucket"],
        ["Destination credentials", record.has_export_credentials ? "stored (write-only)" : "none"],
        ["Delivery schedule", record.export_schedule || "EXPORT_SCHEDULE (the default)"],
        ["Notification webhook", record.notify_url ? `${record.notify_url} (${record.has_notify_secret ? "signed" : "no secret"})` : "none"],
        ["Created", moment(record.created_at)],
        ["Changed", moment(record.updated_at)],
      ]),
    );
    const form = settingsForm(context.client_schemas.change, { mode: "change", record, omit: OWN_CONTROLS });
    const formNode = el(
      "form",
      {
        class: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          let changes;
          try {
            changes = form.values();
          } catch (error) {
            if (error instanceof FormError) return status.show("error", error.message);
            throw error;
          }
          if (!Object.keys(changes).length) return status.show("info", "Nothing changed.");
          try {
            const saved = await api("PATCH", base, { json: changes });
            status.show("success", `Saved: ${Object.keys(changes).join(", ")}.`);
            show(saved);
          } catch (error) {
            status.show("error", `Not saved: ${error.message}`);
          }
        },
      },
      form.element,
      el("button", { type: "submit" }, "Save settings"),
    );
    clear(settings).append(formNode);

    const toggle = record.active
      ? el("button", { type: "button", class: "danger", onclick: () => setActive(false) }, "Deactivate")
      : el("button", { type: "button", onclick: () => setActive(true) }, "Activate");
    clear(actions).append(
      toggle,
      el("button", { type: "button", class: "secondary", onclick: rotate }, "Rotate write key"),
      el("button", { type: "button", class: "secondary", onclick: testDestination }, "Test destination"),
    );
  }

  async function setActive(active) {
    if (!active && !confirm(`Deactivate ${id}? Its events are refused from now on (its domains stay reserved).`)) return;
    try {
      show(await post(`${base}/${active ? "activate" : "deactivate"}`));
      status.show("success", active ? `${id} accepts events again.` : `${id} is deactivated.`);
    } catch (error) {
      status.show("error", error.message);
    }
  }

  async function rotate() {
    if (!confirm(`Replace ${id}'s write key? The current key stops working at once.`)) return;
    try {
      const answer = await post(`${base}/write-key`);
      const keyField = el("input", { type: "text", readonly: true, value: answer.write_key, class: "secret" });
      clear(secret).append(
        el(
          "div",
          { class: "message success", role: "alert" },
          el("p", {}, "The new write key is shown this once: keep it now."),
          field("New write key", keyField),
          copyButton(keyField, "write key", status),
        ),
      );
      keyField.focus();
    } catch (error) {
      status.show("error", error.message);
    }
  }

  async function testDestination() {
    clear(probe).append(el("p", {}, "Writing a test file to the destination…"));
    try {
      const result = await post(`${base}/destination/test`);
      clear(probe).append(
        el(
          "div",
          { class: "message success" },
          el("p", {}, `The destination works: ${result.key} was written to ${result.destination.url} and deleted again in ${result.seconds} s.`),
        ),
      );
    } catch (error) {
      clear(probe).append(
        el(
          "div",
          { class: "message error", role: "alert" },
          el("p", {}, "The destination refused the test. The store said:"),
          el("pre", { class: "store-error" }, error.message),
        ),
      );
    }
  }

  show(await get(base));
}
