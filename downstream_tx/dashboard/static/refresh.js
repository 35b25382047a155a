// downstream-tx dashboard: reload the page every <body data-refresh> seconds (0: never), unless the
// reader is typing in a form field. The page is complete without this script.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) {
    return;
  }
  function tick() {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "BUTTON")) {
      window.setTimeout(tick, seconds * 1000);
      return;
    }
    window.location.reload();
  }
  window.setTimeout(tick, seconds * 1000);
}());
