// The Kausal console's one script: the Replay and Discard buttons of the
// dead letters on a correlation page. Each action runs as a dry run first
// (the API's same checks, nothing changed), then for real on a second
// click. The token the user pastes is kept in this tab's sessionStorage and
// sent as `Authorization: Bearer` to /api/dlq/{id}/replay|discard, nowhere
// else. Everything shown comes in through textContent, never as HTML.
(function () {
  "use strict";

  var KEY = "kausal-console-token";

  function readToken() {
    try {
      return window.sessionStorage.getItem(KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function keepToken(value) {
    try {
      if (value) {
        window.sessionStorage.setItem(KEY, value);
      } else {
        window.sessionStorage.removeItem(KEY);
      }
    } catch (e) {
      // Storage refused (a private mode): the token lives as long as the page.
    }
    memory = value;
  }

  var memory = readToken();

  function token() {
    return readToken() || memory;
  }

  var form = document.getElementById("token-form");
  var input = document.getElementById("token");
  var state = document.getElementById("token-state");
  var forget = document.getElementById("token-forget");

  function showTokenState() {
    if (!state) {
      return;
    }
    var has = token() !== "";
    state.textContent = has ? "Token kept for this tab." : "No token yet.";
    if (forget) {
      forget.hidden = !has;
    }
  }

  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var value = input.value.trim();
      if (value) {
        keepToken(value);
        input.value = "";
      }
      showTokenState();
    });
    forget.addEventListener("click", function () {
      keepToken("");
      showTokenState();
    });
    showTokenState();
  }

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
    var t = token();
    if (!t) {
      show(out, "refused", "Paste the console's token above first: replay and discard need it.");
      if (input) {
        input.focus();
      }
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
      var response = await fetch("/api/dlq/" + encodeURIComponent(id) + "/" + kind, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + t },
        body: JSON.stringify(body),
      });
      var doc = null;
      try {
        doc = await response.json();
      } catch (e) {
        doc = null;
      }
      if (response.status === 401) {
        keepToken("");
        showTokenState();
        show(out, "refused", "Refused: " + ((doc && doc.error) || "the token was not accepted") + " Paste the token again.");
        return;
      }
      var outcome = doc && doc.outcomes && doc.outcomes[0];
      if (!outcome) {
        show(out, "refused", "Failed (" + response.status + "): " + ((doc && doc.error) || response.statusText));
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

  document.querySelectorAll("tr[data-dlq-id]").forEach(function (row) {
    row.addEventListener("click", function (e) {
      var button = e.target.closest("button[data-action]");
      if (button) {
        act(row, button);
      }
    });
  });
})();
