// grayshift operator console. Plain script, no dependency, no inline code
// (the page's Content-Security-Policy allows only this file). It polls
// /status, /metrics and /audit once a second (and /shadow/samples when the
// shadow counted a new mismatch) and changes things through the admin API
// with the token the operator gives at the first change.
"use strict";

(() => {
  // What went wrong in this page (read by the browser tests, shown nowhere).
  const G = (window.grayshiftConsole = { errors: [], polls: 0 });
  window.addEventListener("error", (e) => {
    const t = e.target;
    G.errors.push(t && t !== window ? "failed to load " + (t.src || t.href || t.tagName) : String(e.message));
  }, true);
  window.addEventListener("unhandledrejection", (e) => G.errors.push("unhandled rejection: " + e.reason));
  document.addEventListener("securitypolicyviolation", (e) =>
    G.errors.push("CSP violation: " + e.violatedDirective + " " + e.blockedURI));

  const TOKEN_KEY = "grayshift.adminToken";
  const HISTORY = 60; // points kept for sparklines and charts (one per poll)
  const SHADOW_ROWS = 10; // shadow mismatches listed
  const LEVELS = {
    L1: { name: "L1", what: "send everyone to stable" },
    L2: { name: "L2", what: "freeze the percent and shed new-feature requests" },
    L3: { name: "L3", what: "data inconsistency: everyone to stable, percent locked, data-rollback hook runs" },
  };

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const fill = (node, ...children) => node.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  const notConfigured = () => el("p", { class: "muted" }, "not configured");
  function num(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(4)));
  }
  function ago(rfc3339) {
    if (!rfc3339) return "–";
    const t = Date.parse(rfc3339);
    if (Number.isNaN(t)) return String(rfc3339);
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    const rel = s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return rfc3339 + " (" + rel + " ago)";
  }
  function clock(total) {
    const s = Math.max(0, Math.round(total));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + " h " : "") + (h || m ? m + " min " : "") + sec + " s";
  }
  function seconds(text) {
    let total = 0;
    for (const m of String(text || "").matchAll(/(\d+(?:\.\d+)?)\s*(ms|h|m|s)/g)) {
      total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
    }
    return total;
  }
  const badge = (text, kind) => el("span", { class: "badge " + (kind || text) }, text);
  function dl(pairs) {
    return el("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v instanceof Node ? v : num(v))]));
  }

  // ---- Small SVG charts: a polyline per series, scaled to the box. --------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    return n;
  }
  function chart(series, { w = 120, h = 28, mark = null, label = "", stretch = false } = {}) {
    const all = series.flatMap((s) => s.values).filter(Number.isFinite);
    const max = Math.max(mark ?? 0, ...all, 1e-9);
    const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: "chart" + (stretch ? " stretch" : ""),
      preserveAspectRatio: "none", role: "img", "aria-label": label });
    const y = (v) => (h - 2 - (v / max) * (h - 4)).toFixed(1);
    if (mark !== null) root.append(svg("line", { x1: 0, x2: w, y1: y(mark), y2: y(mark), class: "mark" }));
    for (const s of series) {
      // Newest at the right edge, one step per poll.
      const x = (i) => (w - (s.values.length - 1 - i) * (w / (HISTORY - 1))).toFixed(1);
      const pts = s.values.map((v, i) => (Number.isFinite(v) ? `${x(i)},${y(v)}` : null)).filter(Boolean);
      if (pts.length) root.append(svg("polyline", { points: pts.join(" "), class: "line " + s.cls }));
    }
    return root;
  }
  const push = (arr, v) => { arr.push(v); if (arr.length > HISTORY) arr.shift(); };

  // ---- Messages --------------------------------------------------------------
  function show(kind, text) {
    const m = $("message");
    m.className = "message " + kind;
    m.textContent = text;
    m.hidden = false;
  }

  // ---- Token dialog ----------------------------------------------------------
  function askToken(why) {
    const dialog = $("token-dialog");
    const input = $("token-input");
    $("token-why").textContent = why;
    input.value = "";
    return new Promise((resolve) => {
      let done = false;
      const finish = (value) => {
        if (done) return;
        done = true;
        $("token-ok").removeEventListener("click", ok);
        $("token-cancel").removeEventListener("click", cancel);
        input.removeEventListener("keydown", key);
        dialog.removeEventListener("close", cancel);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const ok = () => finish(input.value.trim());
      const cancel = () => finish(null);
      const key = (e) => { if (e.key === "Enter") { e.preventDefault(); ok(); } };
      $("token-ok").addEventListener("click", ok);
      $("token-cancel").addEventListener("click", cancel);
      input.addEventListener("keydown", key);
      dialog.addEventListener("close", cancel);
      dialog.showModal();
      input.focus();
    });
  }

  // ---- Changes: the admin API with the tab's token ---------------------------
  let busy = false;
  async function change(method, path, body, what) {
    if (busy) return null;
    busy = true;
    try {
      let token = sessionStorage.getItem(TOKEN_KEY);
      let refused = false;
      for (;;) {
        const headers = { "Content-Type": "application/json" };
        if (token) headers.Authorization = "Bearer " + token;
        show("pending", what + ": sending…");
        let response, data;
        try {
          response = await fetch(path, { method, headers, body: JSON.stringify(body), cache: "no-store", credentials: "omit" });
          data = await response.json().catch(() => ({}));
        } catch (e) {
          show("error", what + ": no answer from the admin API (" + e.message + "); it may or may not have been applied — the page shows the state once it can read it again");
          return null;
        }
        if (response.status === 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          if (token !== null) {
            refused = true;
            show("error", "401 Unauthorized: the admin token was refused. Nothing was changed (" + what + ").");
          }
          const why = token === null
            ? "“" + what + "” needs the admin token."
            : "401 Unauthorized: that token was refused. Nothing was changed. Try again or cancel.";
          if (!refused) show("info", what + ": waiting for the admin token…");
          token = await askToken(why);
          if (token === null) {
            if (!refused) show("info", "Cancelled: nothing was changed.");
            return null;
          }
          sessionStorage.setItem(TOKEN_KEY, token);
          continue;
        }
        if (!response.ok) {
          show("error", response.status + " " + (response.statusText || "") + ": " + (data.error || "refused") + " (" + what + ": not done)");
          return null;
        }
        show("ok", "Done: " + what + ".");
        auditDue = true;
        poll();
        return data;
      }
    } finally {
      busy = false;
    }
  }

  // ---- Percent ---------------------------------------------------------------
  let percentTouched = false;
  function percentLabel() {
    const n = Number($("percent-number").value);
    const text = n === 0 ? "Send 0 % of users to new (everyone on stable)"
      : n === 100 ? "Send 100 % of users to new (everyone)" : "Send " + n + " % of users to new";
    $("percent-apply").textContent = text;
    return text;
  }
  function setPercentInputs(n, touched) {
    $("percent-slider").value = n;
    $("percent-number").value = n;
    percentTouched = touched;
    percentLabel();
  }
  function setupPercent() {
    $("percent-slider").addEventListener("input", (e) => setPercentInputs(e.target.value, true));
    // Emptying the field (a change without input, as WebDriver's clear does)
    // is an edit too: the next poll must not write the old percent back.
    $("percent-number").addEventListener("change", () => { percentTouched = true; });
    $("percent-number").addEventListener("input", (e) => {
      percentTouched = true;
      const n = Number(e.target.value);
      if (Number.isInteger(n) && n >= 0 && n <= 100) $("percent-slider").value = n;
      percentLabel();
    });
    $("percent-apply").addEventListener("click", async () => {
      const n = Number($("percent-number").value);
      if (!Number.isInteger(n) || n < 0 || n > 100) {
        show("error", "The percent must be a whole number from 0 to 100. Nothing was sent.");
        return;
      }
      const what = percentLabel();
      if (await change("PUT", "/percent", { percent: n }, what)) percentTouched = false;
    });
  }
  function percentReason(s) {
    const active = (s.rollback && s.rollback.active) || {};
    const reasons = [];
    for (const lvl of ["L3", "L1"]) {
      const a = active[lvl];
      if (a) {
        reasons.push(lvl + " rollback since " + a.since + " by " + a.actor + ": " + a.reason +
          (a.blocked ? " — BLOCKED: users are not sent back to stable" : " — everyone is on stable"));
      }
    }
    if (s.schema && s.schema.new_ready === false) reasons.push("schema gate: new is not ready" + (s.schema.error ? " (" + s.schema.error + ")" : ""));
    if (s.ramp && (s.ramp.state === "running" || s.ramp.state === "paused")) {
      reasons.push("ramp " + s.ramp.state + ", step " + num(s.ramp.step) + " of " + stepCount(s.ramp));
    }
    if (active.L2) reasons.push("L2 active: the percent is frozen, new-feature requests are shed");
    return reasons;
  }
  function renderPercent(s) {
    const p = s.percent || {};
    $("percent-desired").textContent = num(p.desired) + " %";
    $("percent-effective").textContent = num(p.effective) + " %";
    $("percent-effective").classList.toggle("differs", p.desired !== p.effective);
    const reasons = percentReason(s);
    const r = $("percent-reason");
    if (p.desired !== p.effective || reasons.length) {
      r.hidden = false;
      r.textContent = (p.desired !== p.effective ? "Effective differs from desired: " : "") + (reasons.join("; ") || "see the rollback and release sections");
    } else {
      r.hidden = true;
    }
    if (!percentTouched && document.activeElement !== $("percent-slider") && document.activeElement !== $("percent-number")) {
      setPercentInputs(p.desired ?? 0, false);
    }
  }

  // ---- Rollback levels ---------------------------------------------------------
  function setupLevels() {
    const box = $("levels");
    for (const lvl of Object.keys(LEVELS)) {
      const row = el("div", { class: "level", id: "level-" + lvl },
        el("div", { class: "level-head" }, el("strong", {}, lvl), " ", el("span", { id: "level-" + lvl + "-state" }, "–")),
        el("p", { class: "muted small" }, LEVELS[lvl].what),
        el("p", { id: "level-" + lvl + "-detail", class: "small" }),
        el("div", { class: "buttons" },
          el("button", { type: "button", id: "rollback-" + lvl, class: "danger" }, "Roll back " + lvl + ": " + LEVELS[lvl].what),
          el("button", { type: "button", id: "resume-" + lvl, hidden: true },
            lvl === "L3" ? "Resume L3: re-open traffic to new (needs the confirmation)" : "Resume " + lvl + ": route by the desired percent again")));
      if (lvl === "L3") {
        row.append(el("label", { class: "confirm", id: "resume-L3-confirm-label", hidden: true },
          el("input", { type: "checkbox", id: "resume-L3-confirm" }),
          " I confirm the data is consistent: resuming L3 re-opens traffic to the new schema"));
      }
      box.append(row);
      $("rollback-" + lvl).addEventListener("click", () => {
        const reason = $("rollback-reason").value.trim() || "manual rollback from the console";
        change("POST", "/rollback", { level: lvl, reason }, "Roll back " + lvl + " (" + LEVELS[lvl].what + ")");
      });
      $("resume-" + lvl).addEventListener("click", async () => {
        if (lvl === "L3") {
          const box = $("resume-L3-confirm");
          if (!box.checked) {
            show("error", "Resuming L3 needs the confirmation: tick “I confirm the data is consistent” first. Nothing was sent.");
            box.focus();
            return;
          }
          if (await change("POST", "/resume", { level: "L3", confirm: true }, "Resume L3 (re-open traffic to new)")) box.checked = false;
          return;
        }
        change("POST", "/resume", { level: lvl }, "Resume " + lvl);
      });
    }
  }
  function renderLevels(s) {
    const rb = s.rollback || {};
    const active = rb.active || {};
    $("rollback-level").textContent = rb.level ? "L" + rb.level + " active" : "none active";
    $("rollback-level").className = "badge " + (rb.level ? "firing" : "ok");
    for (const lvl of Object.keys(LEVELS)) {
      const a = active[lvl];
      fill($("level-" + lvl + "-state"), a ? badge("active", "firing") : badge("inactive", "ok"), a && a.blocked ? [" ", badge("blocked", "pending")] : null);
      fill($("level-" + lvl + "-detail"), a
        ? ["since " + ago(a.since) + " · by " + a.actor + " · why: " + a.reason,
          a.hook ? " · hook: " + a.hook + (a.hook_detail ? " (" + a.hook_detail + ")" : "") : "",
          a.blocked ? " · blocked: users are NOT sent back to stable (stable does not support the schema now: roll forward or restore it); it takes effect by itself once stable supports it again" : ""]
        : []);
      $("rollback-" + lvl).hidden = !!a;
      $("resume-" + lvl).hidden = !a;
      if (lvl === "L3") $("resume-L3-confirm-label").hidden = !a;
    }
  }

  // ---- Rules -------------------------------------------------------------------
  const ruleHistory = new Map();
  function renderRules(s) {
    const rules = Array.isArray(s.rules) ? s.rules : [];
    if (!rules.length) return fill($("rules"), el("p", { class: "muted" }, "no rules configured"));
    fill($("rules"), rules.map((r) => {
      const hist = ruleHistory.get(r.name) || [];
      ruleHistory.set(r.name, hist);
      if (r.evaluated_at !== hist.lastAt) { push(hist, typeof r.value === "number" ? r.value : NaN); hist.lastAt = r.evaluated_at; }
      let progress = null;
      if (r.state === "pending") {
        const need = seconds(r.for);
        const now = Date.parse(r.evaluated_at) || Date.now();
        const held = Math.max(0, (now - Date.parse(r.since)) / 1000);
        const frac = need > 0 ? Math.min(1, held / need) : 1;
        progress = el("div", { class: "for" },
          el("progress", { max: "1", value: frac.toFixed(3), "aria-label": "for timer" }),
          " " + num(held) + " s of " + r.for + " before it fires");
      }
      return el("div", { class: "rule state-" + r.state, "data-rule": r.name },
        el("div", { class: "rule-head" }, el("strong", {}, r.name), " ", badge(r.level, "level"), " ", badge(r.state, r.state)),
        el("div", { class: "rule-body" },
          el("span", { class: "value" }, "value " + num(r.value) + " · " + r.condition + " " + num(r.threshold) + (r.for ? " for " + r.for : "")),
          chart([{ values: hist, cls: "value" }], { mark: r.threshold, label: "recent values of " + r.name })),
        progress,
        el("p", { class: "muted small" }, r.why || ""));
    }));
  }

  // ---- Traffic from /metrics deltas ----------------------------------------------
  let lastSample = null;
  const traffic = new Map();
  function parseRequests(text) {
    const pools = {};
    for (const line of text.split("\n")) {
      if (!line.startsWith("grayshift_requests_total{")) continue;
      const m = line.match(/^grayshift_requests_total\{([^}]*)\}\s+(\S+)/);
      if (!m) continue;
      const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      const p = (pools[labels.pool] ||= { total: 0, errors: 0 });
      const v = Number(m[2]);
      p.total += v;
      if (labels.code === "5xx") p.errors += v;
    }
    return pools;
  }
  function renderTraffic(metricsText) {
    const now = performance.now();
    const pools = parseRequests(metricsText);
    if (lastSample) {
      const dt = (now - lastSample.at) / 1000;
      for (const [name, p] of Object.entries(pools)) {
        const before = lastSample.pools[name] || { total: 0, errors: 0 };
        const dTotal = Math.max(0, p.total - before.total);
        const dErr = Math.max(0, p.errors - before.errors);
        const t = traffic.get(name) || { rps: [], eps: [], rate: 0 };
        push(t.rps, dt > 0 ? dTotal / dt : 0);
        push(t.eps, dt > 0 ? dErr / dt : 0);
        t.rate = dTotal > 0 ? dErr / dTotal : 0;
        traffic.set(name, t);
      }
    }
    lastSample = { at: now, pools };
    if (!traffic.size) return fill($("traffic"), el("p", { class: "muted" }, lastSample && !Object.keys(pools).length ? "no requests counted yet" : "measuring…"));
    fill($("traffic"), [...traffic.entries()].map(([name, t]) =>
      el("div", { class: "pool-traffic", "data-pool": name },
        el("div", {}, el("strong", {}, name), " ",
          el("span", { class: "rps" }, num(Number(t.rps.at(-1).toFixed(1))) + " req/s"), " · ",
          el("span", { class: "err" + (t.rate > 0 ? " bad" : "") }, "errors " + num(Number((t.rate * 100).toFixed(1))) + " %")),
        chart([{ values: t.rps, cls: "rps" }, { values: t.eps, cls: "eps" }], { w: 300, h: 48, stretch: true, label: name + " requests (blue) and errors (red) per second" }))));
  }

  // ---- Pools, ramp, schema, fleet, ledger, audit, config -----------------------------
  function renderPools(s) {
    const pools = s.pools || {};
    fill($("pools"), Object.entries(pools).map(([name, p]) =>
      el("div", { class: "pool", "data-pool": name },
        el("div", {}, el("strong", {}, name), " ", p.healthy ? badge("healthy", "ok") : badge("no healthy endpoint", "firing")),
        el("ul", { class: "endpoints" }, (p.endpoints || []).map((e) =>
          el("li", {}, e.healthy ? badge("up", "ok") : badge("down", "firing"), " ", el("code", {}, e.address)))))));
  }
  function stepCount(r) {
    return Array.isArray(r.steps) ? r.steps.length : num(r.steps);
  }
  function renderRamp(s) {
    const r = s.ramp;
    if (!r) return fill($("ramp"), notConfigured());
    fill($("ramp"), dl([["state", r.state], ["step", num(r.step) + " of " + stepCount(r) + " (" + (r.steps || []).join(" → ") + " %)"], ["percent", num(r.percent) + " %"],
      ["hold left", typeof r.hold_left === "number" ? clock(r.hold_left) : r.hold_left], ["requests this step", r.requests]]));
  }
  function renderSchema(s) {
    const g = s.schema;
    if (!g) return fill($("schema"), notConfigured());
    const yes = (v) => (v === true ? badge("yes", "ok") : v === false ? badge("no", "firing") : "–");
    fill($("schema"), dl([["tool", g.tool], ["version", g.version], ["new ready", yes(g.new_ready)],
      ["stable supported", yes(g.stable_supported)], g.error ? ["error", el("span", { class: "bad" }, g.error)] : null, ["read at", ago(g.read_at)]]));
  }
  function renderFleet(s) {
    const f = s.fleet;
    if (!f) return fill($("fleet"), notConfigured());
    const members = Array.isArray(f.members) ? f.members : [];
    const behind = (m) => (typeof m.revision === "number" && typeof f.revision === "number" ? m.revision < f.revision : m.revision !== f.revision);
    const store = f.store === "connected" ? badge("connected", "ok") : f.store === "unreachable" ? badge("unreachable", "firing") : f.store;
    fill($("fleet"), dl([["store", store], ["name", f.name], ["this replica", f.replica], ["revision", f.revision]]),
      members.length
        ? el("table", {}, el("thead", {}, el("tr", {}, ["replica", "revision", "effective", "level", "seen"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, members.map((m) => el("tr", { class: behind(m) ? "behind" : "" },
            el("td", {}, m.replica, m.replica === f.replica ? " (this)" : ""),
            el("td", {}, num(m.revision), behind(m) ? [" ", badge("behind", "pending")] : ""),
            el("td", {}, num(m.effective_percent) + " %"),
            el("td", {}, m.rollback_level ? "L" + m.rollback_level : "none"),
            el("td", {}, typeof m.seen === "number" ? num(m.seen) : ago(m.seen))))))
        : el("p", { class: "muted" }, "no members seen"));
  }
  function renderLedger(s) {
    const l = s.ledger;
    if (!l) return fill($("ledger"), notConfigured());
    const warn = (v) => (v ? el("span", { class: "bad" }, num(v)) : num(v));
    fill($("ledger"), dl([["sink", l.sink], ["queued", l.queued], ["dropped", warn(l.dropped)], ["errors", warn(l.errors)], ["last flush", ago(l.last_flush)]]));
  }
  // ---- Shadow reads: counts, skips, the fields that differ, last mismatches ------
  function renderShadow(s) {
    const sh = s.shadow;
    if (!sh) {
      fill($("shadow-samples"));
      return fill($("shadow"), el("p", { class: "muted" }, "not configured (no [shadow] section)"));
    }
    const skipped = Object.entries(sh.skipped || {}).filter(([, n]) => n).map(([reason, n]) => reason + " " + num(n));
    const rate = sh.compared ? num((100 * sh.mismatched) / sh.compared) + " %" : "–";
    const fields = Array.isArray(sh.fields) ? sh.fields : [];
    fill($("shadow"), dl([["sample", sh.sample], ["compared", sh.compared], ["matched", sh.matched],
      ["mismatched", sh.mismatched ? el("span", { class: "bad" }, num(sh.mismatched)) : num(sh.mismatched)],
      ["mismatch rate", rate], ["skipped", skipped.length ? skipped.join(" · ") : "none"]]),
    fields.length
      ? el("table", { class: "shadow-fields" },
        el("caption", {}, "Fields that differ most"),
        el("thead", {}, el("tr", {}, ["field", "mismatches", "noise", "rate"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, fields.map((f) => el("tr", {}, el("td", {}, el("code", {}, f.path)), el("td", {}, num(f.mismatches)),
          el("td", {}, num(f.noise)), el("td", {}, typeof f.rate === "number" ? num(100 * f.rate) + " %" : num(f.rate))))))
      : el("p", { class: "muted" }, "no field differs"));
  }
  function renderShadowSamples(body) {
    const samples = body && Array.isArray(body.samples) ? body.samples : [];
    if (!samples.length) return fill($("shadow-samples"), el("p", { class: "muted" }, "no mismatch yet"));
    const value = (v) => (v === null || v === undefined ? el("span", { class: "muted" }, "absent") : el("code", {}, v));
    // The newest few keep the page scannable; the API keeps the last 50.
    const shown = samples.slice(0, SHADOW_ROWS);
    fill($("shadow-samples"), el("table", { class: "shadow-samples" },
      el("caption", {}, "Last mismatches (newest first" +
        (samples.length > shown.length ? ", " + shown.length + " of " + samples.length + ": all with grayshift ctl shadow" : "") + ")"),
      el("thead", {}, el("tr", {}, ["at", "request", "key", "served by", "status stable / new", "differing fields: stable → new"]
        .map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, shown.map((m) => el("tr", {},
        el("td", {}, m.at),
        el("td", {}, m.method, " ", el("code", {}, m.path)),
        el("td", {}, el("code", {}, m.key)),
        el("td", {}, m.primary),
        el("td", {}, num(m.status && m.status.stable) + " / " + num(m.status && m.status.new)),
        el("td", {}, el("ul", { class: "diffs" }, (m.fields || []).map((f) =>
          el("li", {}, el("code", {}, f.path), ": ", value(f.stable), " → ", value(f.new))))))))));
  }

  function renderAudit(a) {
    const entries = (a && Array.isArray(a.entries) ? a.entries : []).slice().reverse();
    if (!entries.length) return fill($("audit"), el("p", { class: "muted" }, "no changes yet"));
    fill($("audit"), el("table", {},
      el("thead", {}, el("tr", {}, ["time", "actor", "action", "detail"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, entries.map((e) => {
        const { time, actor, action, ...rest } = e;
        const detail = [rest.level, rest.old !== undefined ? num(rest.old) + " → " + num(rest.new) : null, rest.reason, rest.detail]
          .filter((x) => x !== undefined && x !== null && x !== "").join(" · ");
        return el("tr", {}, el("td", {}, time), el("td", {}, actor), el("td", {}, action), el("td", {}, detail));
      }))));
  }
  function renderConfig(s) {
    const c = s.config || {};
    $("group").textContent = c.group ? "· " + c.group : "";
    fill($("config"), dl([["file", c.file], ["version", c.version], ["loaded", ago(c.loaded_at)],
      c.last_reload_error ? ["last reload error", el("span", { class: "bad" }, c.last_reload_error + " (" + c.last_reload_error_at + ")")] : null,
      Array.isArray(c.restart_needed) && c.restart_needed.length
        ? ["restart needed for", el("span", { class: "bad" }, c.restart_needed.join(", "))] : null,
      ["grayshift", s.version]]));
  }

  // ---- Polling -------------------------------------------------------------------
  let polling = false;
  let auditDue = true;
  let lastMark = null;
  let shadowMismatched = null; // /status.shadow.mismatched when the samples were last read
  async function get(path, as) {
    const r = await fetch(path, { cache: "no-store", credentials: "omit" });
    if (!r.ok) throw new Error(path + ": " + r.status);
    return as === "text" ? r.text() : r.json();
  }
  let lastOk = null;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      // The audit log is a file read whole on each /audit: read it every
      // fifth poll, and at once after a change or a level/percent move.
      const wantAudit = auditDue || G.polls % 5 === 0;
      const [status, metrics, audit] = await Promise.allSettled([get("/status"), get("/metrics", "text"),
        wantAudit ? get("/audit?limit=20") : Promise.resolve(null)]);
      if (status.status !== "fulfilled") throw status.reason;
      const s = status.value;
      const mark = JSON.stringify([s.percent, s.rollback && s.rollback.level]);
      // A move seen now is read from the audit next poll (it may have been
      // written after this poll's read).
      auditDue = (lastMark !== null && mark !== lastMark) || (auditDue && !(wantAudit && audit.status === "fulfilled"));
      lastMark = mark;
      G.status = s;
      for (const render of [renderPercent, renderLevels, renderRules, renderShadow, renderPools, renderRamp, renderSchema, renderFleet, renderLedger, renderConfig]) {
        try { render(s); } catch (e) { G.errors.push(render.name + ": " + e); }
      }
      const problems = [];
      if (metrics.status === "fulfilled") renderTraffic(metrics.value);
      else problems.push("traffic: " + metrics.reason.message);
      if (audit.status === "fulfilled") { if (audit.value) renderAudit(audit.value); }
      else problems.push("audit: " + audit.reason.message);
      // The samples change only with a new mismatch: read them then.
      const mismatched = s.shadow ? s.shadow.mismatched : null;
      if (mismatched === null) shadowMismatched = null;
      else if (mismatched !== shadowMismatched) {
        try {
          renderShadowSamples(await get("/shadow/samples"));
          shadowMismatched = mismatched;
        } catch (e) { problems.push("shadow samples: " + e.message); }
      }
      G.polls += 1;
      lastOk = new Date();
      document.body.classList.remove("stale");
      $("conn").textContent = "live · updated " + lastOk.toLocaleTimeString() + (problems.length ? " · cannot read " + problems.join(", ") : "");
      $("conn").className = problems.length ? "conn warn" : "conn ok";
    } catch (e) {
      // Old numbers at 3 a.m. are worse than none: say they are old.
      document.body.classList.add("stale");
      $("conn").textContent = "STALE" + (lastOk ? " since " + lastOk.toLocaleTimeString() : "") +
        ": cannot read the admin API (" + e.message + "); retrying every second";
      $("conn").className = "conn bad";
    } finally {
      polling = false;
    }
  }

  function start() {
    setupPercent();
    setupLevels();
    for (const b of document.querySelectorAll("button.ramp")) {
      b.addEventListener("click", () => change("POST", "/ramp", { action: b.dataset.action }, b.textContent));
    }
    poll();
    setInterval(poll, 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
