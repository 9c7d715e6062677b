// The lag page (issue 13): what the user opened stays open. The live
// refresh (refresh.js) replaces the whole `#lag-board` with a fresh copy
// every few seconds, in which every group's partitions (<details>) are
// closed and nothing has the focus. This remembers which <details> the
// user opened and which link or summary had the focus, and puts both back
// after each refresh (`kausal:refreshed`).
(function () {
  "use strict";

  if (!document.getElementById("lag-board")) {
    return;
  }
  var FOCUSABLE = "a[href], summary, button";
  var opened = {};
  // Where the focus was: the id of the nearest element with an id around
  // it in the board, and its place among that element's focusable ones.
  var focus = null;

  // `toggle` does not bubble; listen while it goes down instead.
  document.addEventListener(
    "toggle",
    function (e) {
      var d = e.target;
      if (d.tagName !== "DETAILS" || !d.id || !d.closest("#lag-board")) {
        return;
      }
      if (d.open) {
        opened[d.id] = true;
      } else {
        delete opened[d.id];
      }
    },
    true
  );

  document.addEventListener("focusin", function (e) {
    var el = e.target;
    var around = el.parentElement;
    var holder = around && around.closest("#lag-board [id], #lag-board");
    if (!holder) {
      focus = null;
      return;
    }
    var index = Array.prototype.indexOf.call(holder.querySelectorAll(FOCUSABLE), el);
    focus = index < 0 ? null : { element: el, holder: holder.id, index: index };
  });

  // The user left the element for nothing (a click on the page): nothing
  // to put back. Removed by a refresh, it is no longer connected instead.
  document.addEventListener("focusout", function (e) {
    var el = e.target;
    if (e.relatedTarget) {
      return;
    }
    window.setTimeout(function () {
      if (focus && focus.element === el && el.isConnected && document.activeElement !== el) {
        focus = null;
      }
    }, 0);
  });

  document.addEventListener("kausal:refreshed", function () {
    Object.keys(opened).forEach(function (id) {
      var d = document.getElementById(id);
      if (d && d.tagName === "DETAILS") {
        d.open = true;
      } else {
        delete opened[id];
      }
    });
    if (focus && !focus.element.isConnected) {
      var holder = document.getElementById(focus.holder);
      var next = holder && holder.querySelectorAll(FOCUSABLE)[focus.index];
      if (next) {
        next.focus({ preventScroll: true });
      } else {
        focus = null;
      }
    }
  });
})();
