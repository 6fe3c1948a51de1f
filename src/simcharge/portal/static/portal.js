// simcharge portal: small enhancements only; every page works without this file.
(function () {
  "use strict";
  // An order waiting for its payment asks for its state and reloads the page when it changes.
  var poll = document.querySelector("[data-poll]");
  if (poll) {
    var url = poll.getAttribute("data-poll");
    var state = poll.getAttribute("data-state");
    var tries = 0;
    var tick = function () {
      tries += 1;
      // X-Background: the page asks, not the person (the session's idle time is not renewed).
      fetch(url, {
        headers: { Accept: "application/json", "X-Background": "1" },
        credentials: "same-origin"
      })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (body && body.state !== state) { window.location.reload(); return; }
          if (tries < 300) { window.setTimeout(tick, tries < 30 ? 2000 : 5000); }
        })
        .catch(function () { window.setTimeout(tick, 5000); });
    };
    window.setTimeout(tick, 2000);
  }
  // An account without a time zone of its own: the browser's is chosen, if the list has it,
  // and the page says so; nothing is saved until the customer saves.
  var zones = document.querySelector("select[data-suggest-zone]");
  var browserZone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zones && browserZone && zones.querySelector("option[value='" + browserZone + "']")) {
    zones.value = browserZone;
    var said = document.querySelector("[data-zone-suggested]");
    if (said) { said.hidden = false; }
  }
  // "Another number" takes focus when chosen; one's own line clears it.
  var gift = document.getElementById("f-msisdn");
  if (gift) {
    document.querySelectorAll("input[name=line]").forEach(function (radio) {
      radio.addEventListener("change", function () {
        if (radio.value === "other") { gift.focus(); } else { gift.value = ""; }
      });
    });
  }
  // A field that belongs to one choice (data's GB or MB, `data-shown-with`) is shown only while
  // that choice is made, and left out of the form otherwise (disabled).
  document.querySelectorAll("[data-shown-with]").forEach(function (field) {
    var form = field.closest("form");
    var wanted = field.getAttribute("data-shown-with");
    var radios = form ? form.querySelectorAll("input[name=what]") : [];
    var sync = function () {
      var chosen = form.querySelector("input[name=what]:checked");
      var on = chosen !== null && chosen.value === wanted;
      field.hidden = !on;
      field.querySelectorAll("select, input").forEach(function (c) { c.disabled = !on; });
    };
    radios.forEach(function (radio) { radio.addEventListener("change", sync); });
    if (radios.length) { sync(); }
  });
})();
