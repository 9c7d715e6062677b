// The dead letters' page (/dlq).
//
// Bulk replay of what the list's filter selects (`section#bulk`, its filter
// in `data-filter`): "Dry run" asks POST /api/dlq/replay with the filter and
// `dry_run: true` and lists every entry it would replay and every one it
// would refuse, with the reason. "Replay N now" then replays exactly the
// entries the dry run said it would — by their ids, never by the filter
// again, so an entry that arrived since is not swept in — in batches, with
// a progress bar, "k of N" and each entry's result as it comes. A refused
// token stops it; the rest can be replayed once the token is pasted again.
//
// The list is not live (the figures above it are): when a live refresh
// shows the ledger moved on, a note offers to reload the list.
//
// Everything shown comes in through textContent, never as HTML.
(function () {
  "use strict";

  var list = document.getElementById("list");
  if (list) {
    document.addEventListener("kausal:refreshed", function () {
      var numbers = document.getElementById("dlq-numbers");
      var stale = document.getElementById("dlq-list-stale");
      if (numbers && stale) {
        stale.hidden = numbers.getAttribute("data-ledger") === list.getAttribute("data-ledger");
      }
    });
  }

  var panel = document.getElementById("bulk");
  if (!panel) {
    return;
  }
  var token = window.Kausal.token;
  var filter = JSON.parse(panel.getAttribute("data-filter") || "{}");
  var dryButton = panel.querySelector('button[data-bulk="dry-run"]');
  var replayButton = panel.querySelector('button[data-bulk="replay"]');
  var progressBox = panel.querySelector(".progress");
  var bar = panel.querySelector("progress");
  var count = panel.querySelector("output.count");
  var state = panel.querySelector("output.bulk-state");
  var table = panel.querySelector("table.bulk-results");
  var rows = table.querySelector("tbody");

  // The ids the last dry run would replay, those not attempted yet, and
  // each id's result cell.
  var planned = [];
  var queue = [];
  var cells = {};
  var tally = { replayed: 0, refused: 0 };
  var running = false;

  function say(kind, text) {
    state.className = "bulk-state" + (kind ? " " + kind : "");
    state.textContent = text;
  }

  function entries(n) {
    return n + (n === 1 ? " entry" : " entries");
  }

  function mark(id, kind, text) {
    var cell = cells[id];
    if (cell) {
      cell.className = "result" + (kind ? " " + kind : "");
      cell.textContent = text;
    }
  }

  function addRow(id) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-bulk-id", id);
    var name = document.createElement("td");
    var link = document.createElement("a");
    link.className = "id";
    link.href = "/dlq/" + encodeURIComponent(id);
    link.textContent = id;
    name.appendChild(link);
    var cell = document.createElement("td");
    tr.appendChild(name);
    tr.appendChild(cell);
    rows.appendChild(tr);
    cells[id] = cell;
  }

  // The entry's row in the list below, if it is shown there: its status
  // and replay count follow, and its own buttons go.
  function settleListRow(id, replayCount) {
    list.querySelectorAll("tr[data-dlq-id]").forEach(function (row) {
      if (row.getAttribute("data-dlq-id") !== id) {
        return;
      }
      var status = row.querySelector("[data-status]");
      status.textContent = "replayed";
      status.className = "status replayed";
      var replays = row.querySelector("[data-replays]");
      if (replays && replayCount !== undefined) {
        replays.textContent = replayCount;
      }
      row.querySelectorAll("td.actions .buttons").forEach(function (b) {
        b.hidden = true;
      });
    });
  }

  function showProgress(done) {
    bar.max = Math.max(planned.length, 1);
    bar.value = done;
    count.textContent = done + " of " + planned.length;
  }

  function offerRest() {
    if (queue.length > 0) {
      replayButton.textContent =
        queue.length === planned.length
          ? "Replay " + entries(planned.length) + " now"
          : "Replay the remaining " + entries(queue.length) + " now";
      replayButton.hidden = false;
    } else {
      replayButton.hidden = true;
    }
  }

  function tokenMissing() {
    if (token.get()) {
      return false;
    }
    say("refused", "Paste the console's token above first: bulk replay needs it.");
    token.focus();
    return true;
  }

  function tokenRefused(doc) {
    say(
      "refused",
      "Refused: " + ((doc && doc.error) || "the token was not accepted") +
        " Paste the token again above, then click again."
    );
    token.focus();
  }

  async function dryRun() {
    if (running || tokenMissing()) {
      return;
    }
    dryButton.disabled = true;
    replayButton.hidden = true;
    say("", "Asking which entries this filter selects\u2026");
    try {
      var answer = await token.post("/api/dlq/replay", Object.assign({ dry_run: true }, filter));
      var doc = answer.doc;
      if (answer.status === 401) {
        tokenRefused(doc);
        return;
      }
      if (!doc || !doc.outcomes) {
        say("refused", "The dry run failed (" + answer.status + "): " + ((doc && doc.error) || "no reason given") + ".");
        return;
      }
      planned = [];
      cells = {};
      rows.replaceChildren();
      progressBox.hidden = true;
      var refused = 0;
      doc.outcomes.forEach(function (o) {
        addRow(o.id);
        if (o.result === "would_replay") {
          planned.push(o.id);
          mark(o.id, "", "would be replayed");
        } else {
          refused += 1;
          mark(o.id, "refused", "would be refused: " + (o.reason || "no reason given"));
        }
      });
      queue = planned.slice();
      tally = { replayed: 0, refused: 0 };
      table.hidden = doc.outcomes.length === 0;
      if (doc.outcomes.length === 0) {
        say("", "No pending entry matches this filter: nothing to replay.");
      } else if (planned.length === 0) {
        say("refused", "Nothing to replay: every selected entry would be refused (reasons below).");
      } else {
        say(
          "ok",
          "Dry run, nothing changed: " + entries(planned.length) + " would be replayed" +
            (refused ? ", " + refused + " refused (reasons below)" : "") + "."
        );
      }
      offerRest();
    } catch (e) {
      say("refused", "The console did not answer: " + e.message);
    } finally {
      dryButton.disabled = false;
    }
  }

  // Small batches for a few entries (the bar moves), at most 50 per request.
  function batchSize() {
    return Math.max(1, Math.min(50, Math.ceil(planned.length / 20)));
  }

  async function replay() {
    if (running || queue.length === 0 || tokenMissing()) {
      return;
    }
    running = true;
    dryButton.disabled = true;
    replayButton.disabled = true;
    progressBox.hidden = false;
    var done = planned.length - queue.length;
    showProgress(done);
    say("", "Replaying\u2026");
    try {
      while (queue.length > 0) {
        var batch = queue.slice(0, batchSize());
        var answer = await token.post("/api/dlq/replay", { ids: batch, dry_run: false });
        var doc = answer.doc;
        if (answer.status === 401) {
          tokenRefused(doc);
          return;
        }
        if (!doc || !doc.outcomes) {
          say(
            "refused",
            "Stopped after " + done + " of " + planned.length + ": the console answered " + answer.status +
              " (" + ((doc && doc.error) || "no reason given") + ")."
          );
          return;
        }
        doc.outcomes.forEach(function (o) {
          if (o.result === "replayed") {
            var r = o.replayed || {};
            mark(o.id, "ok", "replayed to " + r.topic + "[" + r.partition + "]@" + r.offset + " (replay " + r.replay_count + ")");
            settleListRow(o.id, r.replay_count);
            tally.replayed += 1;
          } else {
            mark(o.id, "refused", "refused: " + (o.reason || "no reason given"));
            tally.refused += 1;
          }
        });
        queue = queue.slice(batch.length);
        done += batch.length;
        showProgress(done);
      }
      say(
        tally.refused ? "refused" : "ok",
        "Done: " + done + " of " + planned.length + " handled, " + tally.replayed + " replayed" +
          (tally.refused ? ", " + tally.refused + " refused (reasons below)" : "") +
          ". The figures above follow within seconds."
      );
    } catch (e) {
      say("refused", "Stopped after " + done + " of " + planned.length + ": the console did not answer (" + e.message + ").");
    } finally {
      running = false;
      dryButton.disabled = false;
      replayButton.disabled = false;
      offerRest();
    }
  }

  dryButton.addEventListener("click", dryRun);
  replayButton.addEventListener("click", replay);
})();
