// The Replay and Discard buttons of a dead-letter row (`tr[data-dlq-id]`,
// on a correlation page and on the dead letters' pages). Each action runs as
// a dry run first (the API's same checks, nothing changed), then for real on
// a second click. The token comes from `window.Kausal.token` (token.js).
// Everything shown comes in through textContent, never as HTML.
(function () {
  "use strict";

  var token = window.Kausal.token;

  function show(out, kind, text) {
    out.className = "result" + (kind ? " " + kind : "");
    out.textContent = text;
  }

  function describe(row, outcome) {
    var topic = row.getAttribute("data-topic") || "its original topic";
    switch (outcome.result) {
      case "would_replay":
        return "Dry run: would replay it to " + topic + ". Click \u201cReplay now\u201d to do it.";
      case "would_discard":
        return "Dry run: would discard it. Click \u201cDiscard now\u201d to do it.";
      case "replayed":
        var r = outcome.replayed || {};
        return (
          "Replayed to " + r.topic + "[" + r.partition + "]@" + r.offset +
          " (replay " + r.replay_count + "), new trace " + r.trace_id +
          ". Reload the page to follow what happened next."
        );
      case "discarded":
        return "Discarded.";
      default:
        return "Refused: " + (outcome.reason || "no reason given") + ".";
    }
  }

  async function act(row, button) {
    var action = button.getAttribute("data-action");
    var out = row.querySelector("output.result");
    var id = row.getAttribute("data-dlq-id");
    var kind = action.indexOf("replay") === 0 ? "replay" : "discard";
    var dry = action.slice(-4) === "-dry";
    if (!token.get()) {
      show(out, "refused", "Paste the console's token above first: replay and discard need it.");
      token.focus();
      return;
    }
    var body = { dry_run: dry };
    if (kind === "discard") {
      var reason = row.querySelector("input.reason").value.trim();
      if (!reason) {
        show(out, "refused", "Say why in the reason box before discarding.");
        row.querySelector("input.reason").focus();
        return;
      }
      body.reason = reason;
    }
    button.disabled = true;
    show(out, "", dry ? "Checking\u2026" : kind === "replay" ? "Replaying\u2026" : "Discarding\u2026");
    try {
      var answer = await token.post("/api/dlq/" + encodeURIComponent(id) + "/" + kind, body);
      var doc = answer.doc;
      if (answer.status === 401) {
        show(out, "refused", "Refused: " + ((doc && doc.error) || "the token was not accepted") + " Paste the token again.");
        return;
      }
      var outcome = doc && doc.outcomes && doc.outcomes[0];
      if (!outcome) {
        show(out, "refused", "Failed (" + answer.status + "): " + ((doc && doc.error) || "no reason given"));
        return;
      }
      var done = outcome.result !== "refused";
      show(out, done ? "ok" : "refused", describe(row, outcome));
      if (done && dry) {
        row.querySelector('button[data-action="' + kind + '"]').hidden = false;
      }
      if (done && !dry) {
        var status = row.querySelector("[data-status]");
        status.textContent = outcome.result;
        status.className = "status " + outcome.result;
        row.querySelectorAll("td.actions .buttons").forEach(function (b) {
          b.hidden = true;
        });
      }
    } catch (e) {
      show(out, "refused", "The console did not answer: " + e.message);
    } finally {
      button.disabled = false;
    }
  }

  // Delegated, so rows that a live refresh or a filter brings in work too.
  document.addEventListener("click", function (e) {
    var button = e.target.closest("tr[data-dlq-id] button[data-action]");
    if (button) {
      act(button.closest("tr[data-dlq-id]"), button);
    }
  });
})();
