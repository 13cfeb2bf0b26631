// Usage: accepted events per client per day for a period (GET /billing/usage, reconciled
// with the export ledger as billing is), as a chart and a table; and a month's invoice
// lines (GET /billing/invoice) with the CSV that `evothesis billing report` writes.

import { get } from "./api.js";
import { COLOURS, stackedBars } from "./chart.js";
import { badge, bytes, clear, el, facts, field, messages, number, section, table } from "./dom.js";

function daysOf(first, last) {
  const days = [];
  for (let day = new Date(`${first}T00:00:00Z`); day <= new Date(`${last}T00:00:00Z`); day.setUTCDate(day.getUTCDate() + 1)) {
    days.push(day.toISOString().slice(0, 10));
  }
  return days;
}

function reconciliation(report) {
  const check = report.reconciliation;
  if (check.reconciled) {
    return el("p", { class: "message success" }, badge("success", "Reconciled"), ` ${number(check.batches_checked)} batch(es) of ${number(check.metering_files)} metering file(s) agree with the export ledger.`);
  }
  return el(
    "div",
    { class: "message warning" },
    el("p", {}, badge("warning", "Not reconciled"), " Metering and the export ledger disagree; billing shows the metering records:"),
    el("pre", { class: "json" }, JSON.stringify({ mismatches: check.mismatches, missing_files: check.missing_files, unreadable_files: check.unreadable_files }, null, 2)),
  );
}

export async function render(root, context) {
  const status = messages();
  clear(root).append(status);
  if (!context.may_administer) {
    root.append(el("p", { class: "message info" }, "Usage and invoices need the admin token; this session only reads."));
    return;
  }
  const query = new URLSearchParams(location.search);
  const today = context.today;
  const first = query.get("from") || `${today.slice(0, 8)}01`;
  const last = query.get("to") || today;
  const client = query.get("client_id") || "";
  const month = query.get("month") || first.slice(0, 7);

  const clients = await get("/api/v1/clients").catch(() => []);
  const period = el(
    "form",
    { class: "card filters", method: "get", action: "/console/usage" },
    field("From", el("input", { type: "date", name: "from", value: first, required: true })),
    field("To", el("input", { type: "date", name: "to", value: last, required: true })),
    field(
      "Client",
      el(
        "select",
        { name: "client_id" },
        el("option", { value: "" }, "Every client"),
        clients.map((c) => el("option", { value: c.client_id, selected: c.client_id === client }, c.client_id)),
      ),
    ),
    field("Invoice month", el("input", { type: "month", name: "month", value: month, required: true })),
    el("button", { type: "submit" }, "Show"),
  );
  const usageArea = el("div");
  const invoiceArea = el("div");
  root.append(section("Period", period), section(`Events per client per day, ${first} to ${last}`, usageArea), section(`Invoice for ${month}`, invoiceArea));

  try {
    const report = await get("/billing/usage", { from: first, to: last, client_id: client });
    const days = daysOf(first, last);
    const series = report.clients.map((row) => {
      const perDay = new Map();
      for (const entry of row.days) perDay.set(entry.day, (perDay.get(entry.day) || 0) + entry.accepted_events);
      return { name: row.client_id, values: days.map((day) => perDay.get(day) || 0) };
    });
    const totals = days.map((_, index) => series.reduce((sum, s) => sum + s.values[index], 0));
    const legend = el(
      "ul",
      { class: "legend" },
      series.map((s, index) => el("li", {}, el("span", { class: "swatch", style: null, "data-colour": index % COLOURS.length }), s.name)),
    );
    const summaryText = `${number(report.totals.accepted_events)} accepted events from ${series.length} client(s) over ${days.length} day(s).`;
    clear(usageArea).append(
      facts([
        ["Accepted events (billed)", number(report.totals.accepted_events)],
        ["Stored rows", number(report.totals.stored_events)],
        ["Rejected events", number(report.totals.rejected_events)],
        ["Bytes", bytes(report.totals.bytes)],
      ]),
      reconciliation(report),
      el("div", { class: "chart-area" }, series.length ? [stackedBars({ days, series, title: "Accepted events per day, stacked by client", summary: summaryText }), legend] : null),
      table({
        caption: "Accepted events per day and client",
        rows: days.map((day, index) => ({ day, index })).filter(({ index }) => totals[index] > 0),
        empty: "No usage in this period: events are counted once they are exported.",
        columns: [
          { label: "Day", cell: (row) => row.day },
          ...series.map((s) => ({ label: s.name, numeric: true, cell: (row) => number(s.values[row.index]) })),
          { label: "Total", numeric: true, cell: (row) => number(totals[row.index]) },
        ],
      }),
    );
  } catch (error) {
    clear(usageArea).append(el("p", { class: "message error", role: "alert" }, error.message));
  }

  try {
    const invoice = await get("/billing/invoice", { month, client_id: client });
    const download = new URLSearchParams({ month });
    if (client) download.set("client_id", client);
    clear(invoiceArea).append(
      table({
        caption: `Invoice lines, ${month}, at $${invoice.rate_per_1000} per 1,000 accepted events`,
        rows: invoice.lines,
        empty: "No usage and no new site in this month.",
        columns: [
          { label: "Client", cell: (line) => line.client_id },
          { label: "Accepted events", numeric: true, cell: (line) => number(line.accepted_events) },
          { label: "Sites", numeric: true, cell: (line) => number(line.sites) },
          { label: "New sites", numeric: true, cell: (line) => number(line.new_sites) },
          { label: "Amount (USD)", numeric: true, cell: (line) => line.amount_usd },
        ],
      }),
      el("p", {}, `Total: $${invoice.total_usd}. `, invoice.reconciliation.reconciled ? "Reconciled with the export ledger." : badge("warning", "Not reconciled: see the period above.")),
      el("p", {}, el("a", { class: "button", href: `/billing/invoice.csv?${download}`, download: `invoice-${month}.csv` }, `Download invoice-${month}.csv`)),
    );
  } catch (error) {
    clear(invoiceArea).append(el("p", { class: "message error", role: "alert" }, error.message));
  }
}
