// The ledgerbridge console's only script (no build step, no library): refreshes the regions
// marked data-refresh without reloading the page, and sends a decision form once.
"use strict";

document.querySelectorAll("[data-refresh]").forEach(function (region) {
  var every = (parseInt(region.getAttribute("data-every"), 10) || 15) * 1000;
  setInterval(function () {
    if (document.hidden) {
      return;
    }
    fetch(region.getAttribute("data-refresh"), { credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (fragment) {
        // The fragment is the server's own escaped HTML, rendered as the first page was.
        if (fragment !== null) {
          region.innerHTML = fragment;
        }
      })
      .catch(function () { /* offline for a moment: the next refresh tries again */ });
  }, every);
});

document.querySelectorAll("form[data-once]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (form.getAttribute("data-sent") === "yes") {
      event.preventDefault();
      return;
    }
    form.setAttribute("data-sent", "yes");
  });
});
