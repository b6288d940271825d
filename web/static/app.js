/* regionguard dashboard behaviour. Loaded from 'self' (CSP forbids inline script). */
(function () {
  "use strict";

  // --- overview: refresh the live part every few seconds without a full reload
  function startRefresh(container) {
    var url = container.getAttribute("data-refresh-url");
    var seconds = parseInt(container.getAttribute("data-refresh-seconds") || "5", 10);
    var status = document.getElementById("refresh-status");
    var busy = false;
    var lastOk = Date.now();

    function say(text, isError) {
      if (!status) { return; }
      status.textContent = text;
      status.parentNode.classList.toggle("refresh-error", !!isError);
    }

    // an operator typing a reason in a control inside the live part must not lose it to a refresh
    function typing() {
      var active = document.activeElement;
      if (active && container.contains(active) && active.form) { return true; }
      return Array.prototype.some.call(container.querySelectorAll("form input[name=reason]"), function (i) { return i.value !== ""; });
    }

    function tick() {
      if (busy || document.hidden) { return; }
      if (typing()) { say("paused while you type", false); return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" }, cache: "no-store" })
        .then(function (resp) {
          if (resp.status === 401) { throw new Error("session expired: reload the page to log in"); }
          if (!resp.ok) { throw new Error("refresh failed (HTTP " + resp.status + ")"); }
          return resp.text();
        })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector(".live-body");
          var current = container.querySelector(".live-body");
          if (fresh && current) {
            current.replaceWith(document.importNode(fresh, true));
          }
          lastOk = Date.now();
          say("updated " + new Date().toLocaleTimeString(), false);
        })
        .catch(function (err) {
          var age = Math.round((Date.now() - lastOk) / 1000);
          say(err.message + " (last good update " + age + " s ago)", true);
        })
        .then(function () { busy = false; });
    }

    window.setInterval(tick, Math.max(1, seconds) * 1000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { tick(); } });
  }

  // --- force step: enable the button only when the typed name matches
  function guardForce(input) {
    var form = input.form;
    var button = form ? form.querySelector("button[type=submit]") : null;
    var want = input.getAttribute("data-must-equal");
    function check() { if (button) { button.disabled = input.value !== want; } }
    input.addEventListener("input", check);
    check();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-refresh-url]");
    if (live) { startRefresh(live); }
    Array.prototype.forEach.call(document.querySelectorAll("input[data-must-equal]"), guardForce);
  });
})();
