// Ferry console, Training: the runs table follows /api/runs/stream (server-sent events) and redraws
// itself at each change. The stream is closed when the page is left, so navigation logs no error.
"use strict";

(function () {
  function cell(tag, text, testid) {
    const element = document.createElement(tag);
    if (text !== null && text !== undefined) element.textContent = text;
    if (testid) element.dataset.testid = testid;
    return element;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC") : "-";
  }

  function runRow(run) {
    const row = document.createElement("tr");
    row.dataset.testid = "run-row-" + run.request_id;
    row.dataset.requestId = run.request_id;
    const head = cell("th", null);
    head.scope = "row";
    head.appendChild(cell("code", run.request_id));
    row.appendChild(head);
    row.appendChild(cell("td", run.model_name || "-"));
    row.appendChild(cell("td", (run.dataset || "-") + (run.architecture ? " · " + run.architecture : "")));
    const state = cell("td", null);
    const badge = cell("span", run.state, "run-state");
    badge.className = "badge run-" + run.state;
    state.appendChild(badge);
    row.appendChild(state);
    const progressCell = cell("td", null);
    const bar = document.createElement("progress");
    bar.max = 1;
    if (run.progress !== null && run.progress !== undefined) bar.value = run.progress;
    else if (run.state === "failed") bar.value = 0;  // no epoch known: an empty bar, not a busy one
    bar.dataset.testid = "run-progress-" + run.request_id;
    bar.setAttribute("aria-label", "progress of " + run.request_id);
    progressCell.appendChild(bar);
    const total = run.epochs || run.epochs_requested || "?";
    const epochs = cell("span", run.epoch !== null && run.epoch !== undefined ? " epoch " + run.epoch + "/" + total : "", "run-epochs");
    epochs.className = "muted";
    progressCell.appendChild(epochs);
    row.appendChild(progressCell);
    row.appendChild(cell("td", run.val_accuracy !== null && run.val_accuracy !== undefined ? run.val_accuracy.toFixed(4) : "-"));
    row.appendChild(cell("td", when(run.updated_at)));
    return row;
  }

  function failureRow(run) {
    const row = document.createElement("tr");
    row.dataset.testid = "failure-row-" + run.request_id;
    const head = cell("th", null);
    head.scope = "row";
    head.appendChild(cell("code", run.request_id));
    row.appendChild(head);
    row.appendChild(cell("td", run.model_name || "-"));
    const reason = cell("td", run.reason || "no reason given", "failure-reason");
    reason.className = "reason";
    row.appendChild(reason);
    row.appendChild(cell("td", when(run.updated_at)));
    return row;
  }

  function redraw(snapshot) {
    const runs = snapshot.runs || [];
    document.getElementById("runs-body").replaceChildren.apply(document.getElementById("runs-body"), runs.map(runRow));
    document.getElementById("runs-empty").hidden = runs.length > 0;
    const failed = runs.filter(function (run) { return run.state === "failed"; });
    const failures = document.getElementById("failures-body");
    failures.replaceChildren.apply(failures, failed.map(failureRow));
    document.getElementById("failures-empty").hidden = failed.length > 0;
  }

  document.addEventListener("DOMContentLoaded", function () {
    const state = document.getElementById("stream-state");
    const source = new EventSource("/api/runs/stream");
    source.addEventListener("open", function () { state.textContent = "live"; });
    source.addEventListener("error", function () { state.textContent = "reconnecting…"; });
    source.addEventListener("runs", function (message) { redraw(JSON.parse(message.data)); });
    window.addEventListener("pagehide", function () { source.close(); });
  });
})();
