// Pipeline: export lag, pending rows and batches, the export schedule wherever it runs,
// per-client deliveries with their schedules and next delivery, paused and failing clients
// with their errors and "retry now", dead letters, failed events with their reasons, and the
// spool.

import { api, get } from "./api.js";
import {
  badge,
  bytes,
  clear,
  details,
  duration,
  el,
  facts,
  messages,
  moment,
  number,
  section,
  table,
} from "./dom.js";

/** Why a scheduler's round started, as /pipeline/status names it. */
const TRIGGERS = {
  schedule: ", on schedule",
  threshold: ", as the backlog reached EXPORT_BATCH_SIZE",
  delivery: ", as a client's delivery came due",
};

function outcome(answer) {
  return answer.message || "Done.";
}

export async function render(root, context) {
  const status = messages();
  const overview = el("div");
  const schedulers = el("div");
  const paused = el("div");
  const deliveries = el("div");
  const dead = el("div");
  const batches = el("div");
  const failures = el("div");
  const spool = el("div");
  const actions = el("div", { class: "actions" });
  clear(root).append(
    status,
    actions,
    section("Overview", overview),
    section("Export schedule", schedulers),
    section("Paused clients", paused),
    section("Deliveries per client", deliveries),
    section("Dead letters", dead),
    section("Failed batches", batches),
    section("Failed events", failures),
    section("Spool", spool),
  );

  async function run(label, path, query) {
    status.show("info", `${label}…`);
    try {
      const answer = await api("POST", path, { query });
      status.show("success", outcome(answer));
    } catch (error) {
      status.show("error", `${label} failed: ${error.message}`);
    }
    await refresh();
  }

  /** Retry now (POST /process/retry): the client's dead and failing deliveries due at
   * once, its pause lifted, then its deliveries written. */
  const retry = (clientId) =>
    el(
      "button",
      {
        type: "button",
        "aria-label": `Retry ${clientId} now`,
        disabled: !context.may_run,
        onclick: () => run(`Retrying ${clientId}`, "/process/retry", { client_id: clientId }),
      },
      "Retry now",
    );
  /** A client whose deliveries need an operator: paused, failing or given up. */
  const troubled = (row) => row.paused || row.failing_deliveries || row.dead_deliveries;

  if (context.may_run) {
    actions.append(
      el("button", { type: "button", onclick: () => run("Exporting", "/export/run") }, "Export now"),
      el("button", { type: "button", onclick: () => run("Processing", "/process/run") }, "Process now"),
      el("button", { type: "button", class: "secondary", onclick: () => run("Retrying every client", "/process/retry") }, "Retry all now"),
    );
  }
  actions.append(el("button", { type: "button", class: "secondary", onclick: () => refresh() }, "Refresh"));

  /** The export schedule as the database records it, wherever it runs: collectors with
   * EXPORT_IN_SERVE and `evothesis worker` processes, each a runner. */
  function schedule(scheduler) {
    const ran = scheduler.ran_by;
    const round = scheduler.last_round;
    clear(schedulers).append(
      facts([
        [
          "Scheduler",
          scheduler.running
            ? [badge("success", "Running"), ` ${scheduler.runners.length} runner(s)`]
            : [badge("warning", "Not running"), " no collector with EXPORT_IN_SERVE and no evothesis worker was heard from in the last 30 s: exports run only on demand"],
        ],
        ["Last round", scheduler.last_round_at ? `${moment(scheduler.last_round_at)}${ran ? ` by ${ran.runner} (${ran.role})` : ""}${TRIGGERS[round?.trigger] || ""}` : "none yet"],
        ["Next round due", scheduler.running ? moment(scheduler.next_due_at) : "—"],
        ["Scheduler error", scheduler.last_error ? el("span", { class: "detail" }, scheduler.last_error) : "none"],
      ]),
      table({
        caption: "Running schedulers",
        rows: scheduler.runners,
        rowKey: (row) => row.runner,
        empty: "No scheduler is running.",
        columns: [
          { label: "Runner", cell: (row) => row.runner },
          { label: "Role", cell: (row) => row.role },
          { label: "Every", cell: (row) => duration(row.interval_seconds) },
          { label: "Rounds", numeric: true, cell: (row) => number(row.rounds) },
          { label: "Last round", cell: (row) => moment(row.last_round_at) },
          { label: "Next due", cell: (row) => moment(row.next_due_at) },
          { label: "Heard from", cell: (row) => moment(row.heartbeat_at) },
          { label: "Error", cell: (row) => row.last_error || "—" },
        ],
      }),
    );
  }

  async function refresh() {
    const [pipeline, letters, failed, health] = await Promise.all([
      get("/pipeline/status"),
      get("/process/dead-letters"),
      get("/events/failed", { limit: 50 }),
      get("/health").catch((error) => ({ error })),
    ]);
    const { export: exported, process, scheduler } = pipeline;
    const last = exported.last_run;
    clear(overview).append(
      facts([
        ["State", pipeline.status === "healthy" ? badge("success", "Healthy") : badge("warning", "Degraded")],
        ["Export lag", duration(exported.lag_seconds)],
        ["Pending rows", number(exported.pending_rows)],
        ["Not yet in a batch", number(exported.unclaimed_rows)],
        ["Pending batches", number(exported.pending_batches)],
        ["Exported batches", `${number(exported.exported_batches)} (${number(exported.exported_events)} events)`],
        ["Last batch", last ? `#${last.batch_id}, ${number(last.event_count)} events, ${moment(last.exported_at)}` : "none yet"],
        ["Raw objects to process", number(process.unprocessed_objects)],
        ["Raw export", exported.interval_seconds ? `every ${duration(exported.interval_seconds)}` : "off (on demand)"],
        ["Default delivery schedule", process.default_schedule],
        ["Deliveries waiting", `${number(process.pending_deliveries)} (${number(process.waiting_events)} event(s) wait for their schedule)`],
        ["Deliveries failing", number(process.failing_deliveries)],
        ["Dead letters", number(process.dead_deliveries)],
      ]),
    );
    schedule(scheduler);

    const pausedRows = process.clients.filter(troubled);
    clear(paused).append(
      pausedRows.length
        ? el(
            "ul",
            { class: "paused" },
            pausedRows.map((row) =>
              el(
                "li",
                { class: "card", "data-client": row.client_id },
                el(
                  "p",
                  {},
                  el("strong", {}, row.client_id),
                  " ",
                  row.paused
                    ? badge("error", `Paused until ${moment(row.paused_until)}`)
                    : row.failing_deliveries
                      ? badge("warning", `${row.failing_deliveries} delivery(ies) failing`)
                      : badge("error", `${row.dead_deliveries} dead letter(s)`),
                  ` ${number(row.pending_deliveries)} delivery(ies), ${number(row.pending_events)} event(s) waiting; ${number(row.dead_deliveries)} dead; ${row.consecutive_failures} failure(s) in a row.`,
                ),
                el("pre", { class: "store-error" }, row.last_error || row.delivery_error || ""),
                retry(row.client_id),
              ),
            ),
          )
        : el("p", { class: "empty" }, "No client is paused or failing: every destination took its last files."),
    );

    clear(deliveries).append(
      table({
        caption: "Deliveries per client",
        rows: process.clients,
        rowKey: (row) => row.client_id,
        empty: "No deliveries yet: they appear after the first export.",
        columns: [
          { label: "Client", cell: (row) => row.client_id },
          {
            label: "Schedule",
            cell: (row) => [
              row.schedule,
              row.schedule_is_default ? el("span", { class: "detail" }, "EXPORT_SCHEDULE") : null,
              row.threshold ? el("span", { class: "detail" }, `or at ${number(row.threshold)} events`) : null,
            ],
          },
          {
            label: "State",
            cell: (row) =>
              row.paused
                ? badge("error", "Paused")
                : row.failing_deliveries
                  ? badge("warning", "Failing")
                  : row.dead_deliveries
                    ? badge("error", "Dead letters")
                    : row.pending_deliveries
                      ? badge("neutral", "Waiting")
                      : badge("success", "Up to date"),
          },
          { label: "Deliveries", numeric: true, cell: (row) => number(row.delivered_deliveries) },
          { label: "Delivered events", numeric: true, cell: (row) => number(row.delivered_events) },
          { label: "Waiting deliveries", numeric: true, cell: (row) => number(row.pending_deliveries) },
          { label: "Waiting events", numeric: true, cell: (row) => number(row.pending_events + row.waiting_events) },
          { label: "Next delivery", cell: (row) => (row.next_delivery_at ? moment(row.next_delivery_at) : "with each raw batch") },
          { label: "Last delivery", cell: (row) => moment(row.last_delivered_at) },
          { label: "Retry", cell: (row) => (troubled(row) ? retry(row.client_id) : "—") },
        ],
      }),
    );

    clear(dead).append(
      table({
        caption: "Deliveries given up after failing too long (retry now delivers them again)",
        rows: letters,
        rowKey: (row) => `${row.client_id}-${row.seq}`,
        empty: "No dead letters.",
        columns: [
          { label: "Client", cell: (row) => row.client_id },
          { label: "Delivery", cell: (row) => `#${row.seq}` },
          { label: "Trigger", cell: (row) => row.trigger },
          { label: "Batches", cell: (row) => (row.first_batch === row.last_batch ? `#${row.first_batch}` : `#${row.first_batch}–#${row.last_batch}`) },
          { label: "Events", numeric: true, cell: (row) => number(row.event_count) },
          { label: "Attempts", numeric: true, cell: (row) => number(row.attempts) },
          { label: "Failing since", cell: (row) => moment(row.first_failed_at) },
          { label: "Error", cell: (row) => el("span", { class: "detail" }, row.last_error) },
          { label: "Retry", cell: (row) => retry(row.client_id) },
        ],
      }),
    );

    clear(batches).append(
      table({
        caption: "Raw batches that failed and wait for their retry",
        rows: exported.failed_batches,
        empty: "No failed batch.",
        columns: [
          { label: "Batch", cell: (row) => `#${row.batch_id}` },
          { label: "Events", numeric: true, cell: (row) => number(row.event_count) },
          { label: "Attempts", numeric: true, cell: (row) => number(row.attempts) },
          { label: "Next attempt", cell: (row) => moment(row.next_attempt_at) },
          { label: "Error", cell: (row) => el("span", { class: "detail" }, row.last_error) },
        ],
      }),
    );

    clear(failures).append(
      table({
        caption: "Newest failed events",
        rows: failed,
        empty: "No failed events in the buffer.",
        columns: [
          { label: "Received", cell: (row) => moment(row.received_at) },
          { label: "Client", cell: (row) => row.client_id },
          { label: "Site", cell: (row) => row.site_id },
          { label: "Reason", cell: (row) => row.reason },
          { label: "Field", cell: (row) => row.field || "—" },
          { label: "Message", cell: (row) => row.message },
          { label: "Payload", cell: (row) => details("As stored", row.payload) },
        ],
      }),
    );

    const state = health.error ? null : health.spool;
    clear(spool).append(
      health.error
        ? el("p", { class: "message error" }, `The spool's state could not be read: ${health.error.message}`)
        : state
          ? facts([
              ["Database", health.database],
              ["Segments waiting", number(state.segments)],
              ["Bytes waiting", `${bytes(state.bytes)} of ${bytes(state.max_bytes)}`],
              ["Quarantined files", number(state.quarantined)],
              ["Full", state.full ? badge("error", "yes: events are refused") : "no"],
            ])
          : el("p", {}, "This collector has no spool (SPOOL_MAX_BYTES=0)."),
    );
  }

  await refresh();
}
