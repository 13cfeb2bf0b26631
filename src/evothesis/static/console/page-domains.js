// A client's domains: which hosts' events are attributed to it. Added and removed through
// the admin API, which canonicalises and checks each pattern.

import { api, get, post, segment } from "./api.js";
import { clear, el, field, messages, section, table } from "./dom.js";

const RULES = [
  ["shop.acme.com", "that host only."],
  ["*.acme.com", "every subdomain of acme.com (www.acme.com, a.b.acme.com), but not acme.com itself: add both to cover both."],
  ["https://Shop.Acme.com:8443/x", "is stored as shop.acme.com: scheme, port, path and case are dropped."],
  ["bücher.example", "international names are stored as browsers send them (xn--bcher-kva.example)."],
  ["*.com", "is refused: a wildcard covers a registrable domain (*.example.com), not a top-level domain (*.localhost is allowed, for development)."],
];

export async function render(root, context) {
  const id = context.client_id;
  const base = `/api/v1/clients/${segment(id)}`;
  const status = messages();
  const list = el("div");
  clear(root).append(status);
  if (!context.may_administer) {
    root.append(el("p", { class: "message info" }, "Domains need the admin token; this session only reads."));
    return;
  }

  async function refresh() {
    const record = await get(base);
    clear(list).append(
      table({
        caption: `Domains of ${id}`,
        rows: record.domains,
        empty: `${id} has no domain yet: its events are refused until it has one.`,
        columns: [
          { label: "Domain", cell: (domain) => domain },
          {
            label: "Covers",
            cell: (domain) => (domain.startsWith("*.") ? `every subdomain of ${domain.slice(2)}` : "this host"),
          },
          {
            label: "Action",
            cell: (domain) =>
              el(
                "button",
                {
                  type: "button",
                  class: "danger",
                  "aria-label": `Remove ${domain}`,
                  onclick: async () => {
                    if (!confirm(`Remove ${domain} from ${id}? Its events are refused within a minute.`)) return;
                    try {
                      await api("DELETE", `${base}/domains/${segment(domain)}`);
                      status.show("success", `${domain} removed.`);
                      await refresh();
                    } catch (error) {
                      status.show("error", error.message);
                    }
                  },
                },
                "Remove",
              ),
          },
        ],
      }),
    );
  }

  const input = el("input", { type: "text", name: "domain", required: true, maxlength: 300, autocomplete: "off", spellcheck: "false" });
  const rules = el(
    "ul",
    { class: "rules", id: "domain-rules" },
    RULES.map(([example, meaning]) => el("li", {}, el("code", {}, example), ` ${meaning}`)),
  );
  input.setAttribute("aria-describedby", "domain-rules");
  const form = el(
    "form",
    {
      class: "card inline",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const added = await post(`${base}/domains`, { domain: input.value.trim() });
          status.show("success", `${added.domain} added to ${id}.`);
          input.value = "";
          await refresh();
        } catch (error) {
          status.show("error", `Not added: ${error.message}`);
        }
      },
    },
    field("Domain", input, "An exact host or a *. wildcard; how each is read:"),
    rules,
    el("button", { type: "submit" }, "Add domain"),
  );
  root.append(section("Current domains", list), section("Add a domain", form));
  await refresh();
}
