// The console's token, shared by every page that changes something (replay,
// discard, bulk replay): the user pastes it once into the token form; it is
// kept in this tab's sessionStorage and sent as `Authorization: Bearer` to
// the console's own /api/…, nowhere else. Exposed as `window.Kausal.token`.
(function () {
  "use strict";

  var KEY = "kausal-console-token";
  var memory = "";

  function stored() {
    try {
      return window.sessionStorage.getItem(KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function keep(value) {
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
    showState();
  }

  function get() {
    return stored() || memory;
  }

  var form = document.getElementById("token-form");
  var input = document.getElementById("token");
  var state = document.getElementById("token-state");
  var forget = document.getElementById("token-forget");

  function showState() {
    if (!state) {
      return;
    }
    var has = get() !== "";
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
        keep(value);
        input.value = "";
      }
    });
    forget.addEventListener("click", function () {
      keep("");
    });
    showState();
  }

  // POSTs `body` as JSON to `path` with the token. Resolves to
  // {status, doc} (doc: the parsed JSON answer or null); a refused token is
  // forgotten. Rejects only when the console did not answer.
  async function post(path, body) {
    var response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + get() },
      body: JSON.stringify(body),
    });
    var doc = null;
    try {
      doc = await response.json();
    } catch (e) {
      doc = null;
    }
    if (response.status === 401) {
      keep("");
    }
    return { status: response.status, doc: doc };
  }

  function focus() {
    if (input) {
      input.focus();
    }
  }

  window.Kausal = window.Kausal || {};
  window.Kausal.token = { get: get, keep: keep, post: post, focus: focus };
})();
