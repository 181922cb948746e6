// paas console: the live parts of server-rendered pages. Everything works without this file
// except live updates: the dashboard refreshes itself, a deploy's output and the log stream
// grow as lines arrive, and a database task's page reloads until the task ends.
"use strict";
(function () {
  function get(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // Dashboard: re-render its live part every 5 s (the server renders it; we swap it in).
  var live = document.querySelector("[data-live-url]");
  if (live) {
    setInterval(function () {
      if (document.hidden) return;
      fetch(live.dataset.liveUrl, { credentials: "same-origin" }).then(function (r) {
        if (r.redirected || !r.ok) return null;
        return r.text();
      }).then(function (html) { if (html !== null && html !== undefined) live.innerHTML = html; }).catch(function () {});
    }, 5000);
  }

  function append(pre, text, cls) {
    var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    var span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text + "\n";
    pre.appendChild(span);
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  // A deploy's output: long-poll its events until the release is finished.
  var out = document.getElementById("deploy-output");
  if (out && out.dataset.done !== "true") {
    (async function () {
      var next = out.dataset.next || "0";
      for (;;) {
        var r;
        try { r = await get(out.dataset.eventsUrl + "?after=" + next); } catch (e) { await sleep(2000); continue; }
        if (!r.ok) { await sleep(2000); continue; }
        var d = await r.json();
        d.events.forEach(function (e) { append(out, e.text, e.kind); });
        next = d.next;
        var status = document.getElementById("deploy-status");
        status.textContent = d.status;
        status.className = "status-" + d.status;
        if (d.error) document.getElementById("deploy-error").textContent = d.error;
        if (d.done) {
          if (d.status === "active") document.getElementById("deploy-url").hidden = false;
          return;
        }
      }
    })();
  }

  // The log stream: follow new lines while the box is ticked.
  var logs = document.getElementById("log-lines");
  var follow = document.getElementById("follow");
  if (logs && follow) {
    logs.scrollTop = logs.scrollHeight;
    (async function () {
      var cursor = logs.dataset.cursor || "0";
      for (;;) {
        if (!follow.checked || document.hidden) { await sleep(1000); continue; }
        var q = "?after=" + encodeURIComponent(cursor);
        ["process", "source", "grep"].forEach(function (k) {
          if (logs.dataset[k]) q += "&" + k + "=" + encodeURIComponent(logs.dataset[k]);
        });
        var r;
        try { r = await get(logs.dataset.followUrl + q); } catch (e) { await sleep(2000); continue; }
        if (!r.ok) { await sleep(5000); continue; }
        var d = await r.json();
        d.lines.forEach(function (l) {
          var who = l.source === "app" ? "app[" + l.process + "." + l.replica + "]" : l.source;
          append(logs, l.at + " " + who + ": " + l.text);
        });
        cursor = d.cursor;
      }
    })();
  }

  // A database task in progress: look again until it ends.
  var task = document.querySelector("[data-reload]");
  if (task && task.dataset.reload) {
    setTimeout(function () { location.reload(); }, Number(task.dataset.reload) * 1000);
  }
})();
