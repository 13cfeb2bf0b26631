// Pipeline: export lag, pending rows and batches, the export schedule wherever it runs,
// per-client deliveries, paused clients with their errors and a retry, failed events with
// their reasons, and the spool.

import { get, post } from "./api.js";
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
    section("Failed batches", batches),
    section("Failed events", failures),
    section("Spool", spool),
  );

  async function run(label, path, body) {
    status.show("info", `${label}…`);
    try {
      const answer = await post(path, body);
      status.show("success", outcome(answer));
    } catch (error) {
      status.show("error", `${label} failed: ${error.message}`);
    }
    await refresh();
  }

  const retry = (clientId) =>
    el(
      "button",
      {
        type: "button",
        "aria-label": `Retry ${clientId}`,
        disabled: !context.may_run,
        onclick: () => run(`Retrying ${clientId}`, "/process/retry", { client_id: clientId }),
      },
      "Retry",
    );

  if (context.may_run) {
    actions.append(
      el("button", { type: "button", onclick: () => run("Exporting", "/export/run") }, "Export now"),
      el("button", { type: "button", onclick: () => run("Processing", "/process/run") }, "Process now"),
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
    const [pipeline, failed, health] = await Promise.all([
      get("/pipeline/status"),
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
        ["Schedule", exported.schedule_seconds ? `every ${duration(exported.schedule_seconds)}` : "off (on demand)"],
      ]),
    );
    schedule(scheduler);

    const pausedRows = process.clients.filter((row) => row.paused || row.failing_files);
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
                  row.paused ? badge("error", `Paused until ${moment(row.paused_until)}`) : badge("warning", `${row.failing_files} file(s) failing`),
                  ` ${number(row.pending_files)} file(s), ${number(row.pending_events)} event(s) waiting; ${row.consecutive_failures} failure(s) in a row.`,
                ),
                el("pre", { class: "store-error" }, row.last_error || row.delivery_error || ""),
                retry(row.client_id),
              ),
            ),
          )
        : el("p", { class: "empty" }, "No client is paused: every destination took its last files."),
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
            label: "State",
            cell: (row) =>
              row.paused ? badge("error", "Paused") : row.failing_files ? badge("warning", "Failing") : row.pending_files ? badge("neutral", "Waiting") : badge("success", "Up to date"),
          },
          { label: "Delivered files", numeric: true, cell: (row) => number(row.delivered_files) },
          { label: "Delivered events", numeric: true, cell: (row) => number(row.delivered_events) },
          { label: "Waiting files", numeric: true, cell: (row) => number(row.pending_files) },
          { label: "Waiting events", numeric: true, cell: (row) => number(row.pending_events) },
          { label: "Last delivery", cell: (row) => moment(row.last_delivered_at) },
          { label: "Retry", cell: (row) => (row.pending_files ? retry(row.client_id) : "—") },
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
