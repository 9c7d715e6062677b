// Live refresh without a full reload: a page whose <main> carries
// `data-refresh-seconds` is fetched again every that many seconds while the
// tab is visible, and every element marked `data-live` (with an id) is
// replaced by its namesake from the new copy. What the user is typing into
// (a focused input, an open <details>) is never inside a `data-live`
// element, so nothing they do is lost. A failed fetch leaves the page as it
// is and says so in the `#live-state` element, if the page has one.
(function () {
  "use strict";

  var main = document.querySelector("main[data-refresh-seconds]");
  if (!main) {
    return;
  }
  var seconds = Math.max(2, parseInt(main.getAttribute("data-refresh-seconds"), 10) || 5);
  var state = document.getElementById("live-state");
  var busy = false;

  function say(text, failed) {
    if (state) {
      state.textContent = text;
      state.className = failed ? "live failed" : "live";
    }
  }

  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      var response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) {
        say("Live refresh paused: the console answered " + response.status + ".", true);
        return;
      }
      var fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      document.querySelectorAll("[data-live][id]").forEach(function (old) {
        var next = fresh.getElementById(old.id);
        if (next) {
          old.replaceWith(document.importNode(next, true));
        }
      });
      say("Live: refreshed at " + new Date().toISOString().slice(11, 19) + " UTC.", false);
      document.dispatchEvent(new CustomEvent("kausal:refreshed"));
    } catch (e) {
      say("Live refresh paused: the console did not answer.", true);
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
})();
