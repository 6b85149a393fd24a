// FCTF Contestant Portal: a hash-routed single page over the public API (/api/v1/...).
//
// Hand-written, no framework, no build step. Everything the page shows comes from the API's
// CTFd-style envelopes ({"success": true, "data": ...} or the one error shape
// {"success": false, "error": KIND, "message": ...}). Text from the server is always put in the
// page as text nodes, never as HTML (descriptions, hints and notifications are Markdown, built as
// DOM nodes by `markdown`). The session is the HttpOnly cookie: this script
// never sees it, and puts no token or session in a URL (the instance link is the API's own
// one-time link, opened in a new tab with no referrer).

const $ = (selector, root = document) => root.querySelector(selector);

// ---- DOM helpers ----

/** An element: h("a", {href: "#/x", class: "y", onclick: fn}, "text", child, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Appends the children that are not null (so optional parts can be written inline). */
function put(parent, ...children) {
  parent.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** A labelled input: the label wraps it, so screen readers name it. */
function field(label, attrs, hint) {
  return h("label", {}, label, hint ? h("span", { class: "hint" }, hint) : null, h("input", attrs));
}

/** A message line under a form, announced to screen readers when it changes. */
function messageLine(id) {
  return h("p", { id, class: "msg", "aria-live": "polite" });
}

function say(el, text, kind = "") {
  el.textContent = text;
  el.className = `msg ${kind}`;
}

let toastTimer = 0;
/** A short status message (role=status, aria-live=polite). */
function toast(text) {
  const el = $("#status");
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 3000);
}

/** Copies `text`; falls back to a selection copy where the Clipboard API is unavailable (http). */
async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", { "aria-hidden": "true", readonly: true });
    area.value = text;
    area.className = "skip";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied.");
}

function copyLine(id, text, label) {
  return h(
    "div",
    { class: "copyline" },
    h("code", { id }, text),
    h("button", { type: "button", class: "secondary", "aria-label": label, onclick: () => copy(text) }, "Copy"),
  );
}

function when(iso) {
  const date = typeof iso === "number" ? new Date(iso) : new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function duration(secs) {
  secs = Math.max(0, Math.floor(secs));
  const m = Math.floor(secs / 60);
  const s = secs % 60;
  if (m >= 60) return `${Math.floor(m / 60)} h ${m % 60} min`;
  return m > 0 ? `${m} min ${String(s).padStart(2, "0")} s` : `${s} s`;
}

// ---- Markdown (the subset CTFd descriptions use) ----
//
// Built as DOM nodes, never through innerHTML: raw HTML in the source stays text, and a link is
// only made for http(s) and mailto targets. Blocks: paragraphs, `#` headings, `-`/`*`/`1.`
// lists, ``` fenced code, `>` quotes. Inline: `code`, **strong**, *em* / _em_, [text](url).

const SAFE_LINK = /^(https?:\/\/|mailto:)/i;

/** Inline Markdown of one block's text, as nodes. */
function inline(text) {
  const out = [];
  // Order matters: code spans first (nothing inside them is Markdown), then links, then emphasis.
  const pattern = /`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|\b_([^_\s][^_]*)_\b/g;
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) out.push(h("code", {}, m[1]));
    else if (m[2] !== undefined) {
      out.push(SAFE_LINK.test(m[3]) ? h("a", { href: m[3], target: "_blank", rel: "noopener noreferrer nofollow" }, inline(m[2])) : m[0]);
    } else if (m[4] !== undefined || m[5] !== undefined) out.push(h("strong", {}, inline(m[4] ?? m[5])));
    else out.push(h("em", {}, inline(m[6] ?? m[7])));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** A Markdown document as a `div.md` of block elements. */
function markdown(source, attrs = {}) {
  const root = h("div", { ...attrs, class: `md ${attrs.class ?? ""}`.trim() });
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) root.append(h("p", {}, inline(para.join("\n"))));
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*```/);
    if (fence) {
      flush();
      list = null;
      const code = [];
      for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
      root.append(h("pre", {}, h("code", {}, code.join("\n"))));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    const item = line.match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/);
    const quote = line.match(/^>\s?(.*)$/);
    if (!line.trim()) {
      flush();
      list = null;
    } else if (heading) {
      flush();
      list = null;
      // Headings inside a description sit below the page's own h1/h2.
      root.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
    } else if (item) {
      flush();
      const tag = item[1] !== undefined ? "ol" : "ul";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = h(tag, {});
        root.append(list);
      }
      list.append(h("li", {}, inline(item[2])));
    } else if (quote) {
      flush();
      list = null;
      root.append(h("blockquote", {}, inline(quote[1])));
    } else {
      list = null;
      para.push(line);
    }
  }
  flush();
  return root;
}

// ---- the API ----

/**
 * One API call. Resolves (never rejects) to {ok, status, data, error, message, retryAfter}.
 * Unsafe requests carry the browser's Fetch metadata (Sec-Fetch-Site: same-origin), which is
 * what the service's CSRF guard checks.
 */
async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch {
    return { ok: false, status: 0, error: "network", message: "The server cannot be reached; check your connection." };
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (response.status === 401 && session.me && !path.startsWith("/auth/")) {
    // The session ended (expired, logged in elsewhere, password changed): back to the login.
    session.me = null;
    session.team = null;
    renderChrome();
    location.hash = "#/login";
  }
  if (response.ok && json && json.success !== false) {
    return { ok: true, status: response.status, data: json.data, meta: json.meta };
  }
  return {
    ok: false,
    status: response.status,
    error: json?.error ?? "unknown",
    message: json?.message ?? `The server answered ${response.status}.`,
    retryAfter: (json?.retry_after ?? Number(response.headers.get("Retry-After"))) || 0,
  };
}

// ---- session state ----

const session = { me: null, team: null, contest: null };

async function refreshSession() {
  const [me, contest] = await Promise.all([api("GET", "/users/me"), api("GET", "/contest")]);
  session.me = me.ok ? me.data : null;
  session.contest = contest.ok ? contest.data : null;
  session.team = null;
  if (session.me && session.me.team_id) {
    const team = await api("GET", "/teams/me");
    session.team = team.ok ? team.data : null;
  }
  renderChrome();
}

function renderChrome() {
  const who = $("#who");
  who.replaceChildren();
  $("#nav").hidden = !session.me;
  if (session.me) {
    who.append(
      h("span", { id: "who-name" }, session.me.name, session.team ? ` · ${session.team.name}` : ""),
      h("button", { type: "button", class: "secondary", id: "logout", onclick: logout }, "Log out"),
    );
  } else {
    who.append(h("a", { href: "#/login" }, "Log in"), h("a", { href: "#/register" }, "Register"));
  }
  const banner = $("#banner");
  const c = session.contest;
  const text = !c
    ? ""
    : c.phase === "not_started"
      ? `The contest starts ${c.start_ms ? when(c.start_ms) : "soon"}.`
      : c.phase === "paused"
        ? "The contest is paused."
        : c.phase === "ended"
          ? "The contest has ended."
          : c.phase === "frozen"
            ? "The scoreboard is frozen: solves from now on show after the end."
            : "";
  banner.textContent = text;
  banner.hidden = !text;
}

async function logout() {
  await api("POST", "/auth/logout");
  session.me = null;
  session.team = null;
  renderChrome();
  location.hash = "#/login";
  toast("Logged out.");
}

// ---- routing ----

const routes = {
  login: viewLogin,
  register: viewRegister,
  team: viewTeam,
  challenges: viewChallenges,
  challenge: viewChallenge,
  scoreboard: viewScoreboard,
  notifications: viewNotifications,
  tickets: viewTickets,
};
const PUBLIC = new Set(["login", "register", "scoreboard"]);

// Timers of the current view, cleared when the view changes.
let timers = [];
function every(ms, fn) {
  timers.push(setInterval(fn, ms));
}
function later(ms, fn) {
  timers.push(setTimeout(fn, ms));
}

let renderSeq = 0;
let lastPage = "";

async function render() {
  timers.forEach((t) => {
    clearInterval(t);
    clearTimeout(t);
  });
  timers = [];
  const seq = ++renderSeq;
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  let route = routes[name] ? name : session.me ? "challenges" : "login";
  if (!session.me && !PUBLIC.has(route)) route = "login";
  if (session.me && (route === "login" || route === "register")) route = "challenges";
  // A redirect (unknown page, or a page the session cannot see) replaces the entry.
  if (route !== name) history.replaceState(null, "", `#/${route}`);
  refreshInstance = null;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === route || (route === "challenge" && a.dataset.nav === "challenges")) {
      a.setAttribute("aria-current", "page");
    } else {
      a.removeAttribute("aria-current");
    }
  }
  const view = h("div", { id: "view", "data-route": route });
  $("#view").replaceWith(view);
  await routes[route](view, arg, () => seq === renderSeq);
  // A new page moves the focus to its heading (screen readers announce it); a re-render of the
  // same page (after a form) leaves the focus where it is.
  const heading = $("h1", view);
  const moved = location.hash !== lastPage;
  lastPage = location.hash;
  if (heading && (moved || !view.contains(document.activeElement))) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
  document.title = heading ? `${heading.textContent} · FCTF` : "FCTF";
}

window.addEventListener("hashchange", render);

// ---- pages: accounts ----

function viewLogin(view) {
  const msg = messageLine("login-msg");
  const form = h(
    "form",
    { id: "login-form", class: "card", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in"),
    field("Name or email", { id: "login-name", name: "name", required: true, autocomplete: "username" }),
    field("Password", { id: "login-password", name: "password", type: "password", required: true, autocomplete: "current-password" }),
    h("button", { type: "submit" }, "Log in"),
    msg,
    h("p", {}, "No account yet? ", h("a", { href: "#/register" }, "Register")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(msg, "Logging in…");
    const answer = await api("POST", "/auth/login", {
      name: $("#login-name").value.trim(),
      password: $("#login-password").value,
    });
    if (!answer.ok) return say(msg, answer.message, "bad");
    await refreshSession();
    location.hash = session.team ? "#/challenges" : "#/team";
    toast("Logged in.");
  });
  put(view, form);
}

function viewRegister(view) {
  const msg = messageLine("register-msg");
  const form = h(
    "form",
    { id: "register-form", class: "card", "aria-labelledby": "register-title" },
    h("h1", { id: "register-title" }, "Register"),
    field("Name", { id: "register-name", name: "name", required: true, autocomplete: "username", maxlength: 128 }),
    field("Email", { id: "register-email", name: "email", type: "email", autocomplete: "email" }, "optional"),
    field("Password", { id: "register-password", name: "password", type: "password", required: true, autocomplete: "new-password" }),
    h("button", { type: "submit" }, "Create account"),
    msg,
    h("p", {}, "Have an account? ", h("a", { href: "#/login" }, "Log in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(msg, "Creating your account…");
    const body = { name: $("#register-name").value.trim(), password: $("#register-password").value };
    const email = $("#register-email").value.trim();
    if (email) body.email = email;
    const answer = await api("POST", "/auth/register", body);
    if (!answer.ok) return say(msg, answer.message, "bad");
    await refreshSession();
    location.hash = "#/team";
    toast("Welcome! Now create or join a team.");
  });
  put(view, form);
}

// ---- pages: team ----

async function viewTeam(view, _arg, current) {
  await refreshSession();
  if (!current()) return;
  if (!session.team) return teamless(view);
  const team = session.team;
  const members = await Promise.all(
    (team.members || []).map(async (id) => {
      const user = await api("GET", `/users/${id}`);
      return { id, name: user.ok ? user.data.name : `#${id}` };
    }),
  );
  if (!current()) return;
  const msg = messageLine("team-msg");
  const isCaptain = team.captain_id === session.me.id;
  put(view, 
    h("h1", {}, team.name),
    h(
      "section",
      { class: "card", "aria-labelledby": "members-title" },
      h("h2", { id: "members-title" }, "Members"),
      h(
        "ul",
        { class: "plain", id: "team-members" },
        members.map((m) => h("li", {}, m.name, m.id === team.captain_id ? h("span", { class: "muted" }, " (captain)") : null)),
      ),
    ),
    team.invite_code
      ? h(
          "section",
          { class: "card", "aria-labelledby": "invite-title" },
          h("h2", { id: "invite-title" }, "Invite code"),
          h("p", { class: "muted" }, "Teammates join with this code on their Team page."),
          copyLine("team-invite", team.invite_code, "Copy the invite code"),
        )
      : null,
    h(
      "section",
      { class: "card" },
      h(
        "button",
        {
          type: "button",
          class: "danger",
          id: "team-leave",
          onclick: async () => {
            if (!confirm(isCaptain ? "Leave the team? Hand the captaincy over first if others remain." : "Leave the team?")) return;
            const answer = await api("POST", "/teams/me/leave");
            if (!answer.ok) return say(msg, answer.message, "bad");
            toast("You left the team.");
            render();
          },
        },
        "Leave the team",
      ),
      msg,
    ),
  );
}

async function teamless(view) {
  const brackets = await api("GET", "/brackets");
  const teamBrackets = brackets.ok ? (brackets.data || []).filter((b) => b.type === "teams") : [];
  const createMsg = messageLine("team-create-msg");
  const joinMsg = messageLine("team-join-msg");
  const create = h(
    "form",
    { id: "team-create-form", class: "card", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "Create a team"),
    field("Team name", { id: "team-create-name", required: true, maxlength: 128 }),
    teamBrackets.length
      ? h(
          "label",
          {},
          "Bracket",
          h("select", { id: "team-create-bracket" }, h("option", { value: "" }, "None"), teamBrackets.map((b) => h("option", { value: b.id }, b.name))),
        )
      : null,
    h("button", { type: "submit" }, "Create"),
    createMsg,
  );
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: $("#team-create-name").value.trim() };
    const bracket = $("#team-create-bracket")?.value;
    if (bracket) body.bracket_id = Number(bracket);
    const answer = await api("POST", "/teams", body);
    if (!answer.ok) return say(createMsg, answer.message, "bad");
    toast("Team created.");
    render();
  });
  const join = h(
    "form",
    { id: "team-join-form", class: "card", "aria-labelledby": "join-title" },
    h("h2", { id: "join-title" }, "Join a team"),
    field("Invite code", { id: "team-join-code", required: true, autocomplete: "off", spellcheck: "false" }),
    h("button", { type: "submit" }, "Join"),
    joinMsg,
  );
  join.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await api("POST", "/teams/join", { invite_code: $("#team-join-code").value.trim() });
    if (!answer.ok) return say(joinMsg, answer.message, "bad");
    toast("You joined the team.");
    render();
  });
  put(view, h("h1", {}, "Team"), h("p", { class: "muted" }, "You play as a team: create one, or join one with its invite code."), h("div", { class: "grid2" }, create, join));
}

// ---- pages: challenges ----

async function viewChallenges(view, _arg, current) {
  const answer = await api("GET", "/challenges");
  if (!current()) return;
  put(view, h("h1", {}, "Challenges"));
  if (!session.team) {
    put(view, h("p", { class: "card" }, "You are not in a team yet: ", h("a", { href: "#/team" }, "create or join one"), " to submit flags."));
  }
  if (!answer.ok) return put(view, h("p", { class: "msg bad", role: "alert" }, answer.message));
  const list = answer.data || [];
  if (!list.length) return put(view, h("p", { class: "muted" }, "No challenges yet."));
  const categories = new Map();
  for (const c of list) {
    const key = c.category || "Other";
    if (!categories.has(key)) categories.set(key, []);
    categories.get(key).push(c);
  }
  const solved = list.filter((c) => c.solved_by_me).length;
  put(view, h("p", { class: "muted", id: "solved-count" }, `Solved ${solved} of ${list.length}.`));
  for (const [category, items] of categories) {
    const headingId = `cat-${category.replace(/[^A-Za-z0-9]+/g, "-")}`;
    put(view, 
      h(
        "section",
        { class: "category", "aria-labelledby": headingId },
        h("h2", { id: headingId }, category),
        h(
          "ul",
          { class: "tiles" },
          items.map((c) => {
            const locked = c.type === "hidden";
            const label = [
              c.name,
              locked ? "locked" : `${c.value} points`,
              c.solved_by_me ? "solved" : null,
            ]
              .filter(Boolean)
              .join(", ");
            const inner = [
              h("span", { class: "name" }, locked ? "???" : c.name),
              h("span", { class: "value" }, locked ? "—" : String(c.value)),
              h("span", { class: "meta" }, locked ? "Locked" : `${c.solves ?? 0} solve${c.solves === 1 ? "" : "s"}`, c.instance ? " · instance" : ""),
              c.solved_by_me ? h("span", { class: "mark solved" }, "✓ Solved") : null,
              locked ? h("span", { class: "mark" }, "🔒") : null,
            ];
            return h(
              "li",
              {},
              locked
                ? h("span", { class: "tile locked", "aria-label": label }, inner)
                : h("a", { class: `tile${c.solved_by_me ? " solved" : ""}`, href: `#/challenge/${c.id}`, "aria-label": label, "data-challenge": c.name }, inner),
            );
          }),
        ),
      ),
    );
  }
}

async function viewChallenge(view, arg, current) {
  const id = Number(arg);
  const answer = await api("GET", `/challenges/${id}`);
  if (!current()) return;
  put(view, h("p", {}, h("a", { href: "#/challenges" }, "← All challenges")));
  if (!answer.ok) return put(view, h("h1", {}, "Challenge"), h("p", { class: "msg bad", role: "alert" }, answer.message));
  const c = answer.data;
  const attemptsLeft = c.max_attempts > 0 ? Math.max(0, c.max_attempts - (c.attempts || 0)) : null;
  put(view, 
    h("h1", { id: "challenge-name" }, c.name),
    h(
      "p",
      { class: "muted" },
      `${c.category} · ${c.value} points · ${c.solves} solve${c.solves === 1 ? "" : "s"}`,
      c.solved_by_me ? h("span", { class: "mark solved", id: "challenge-solved" }, " · ✓ Solved") : null,
    ),
    c.tags && c.tags.length ? h("ul", { class: "tags", "aria-label": "Tags" }, c.tags.map((t) => h("li", {}, t.value ?? t))) : null,
  );
  const about = h("section", { class: "card", "aria-label": "Description" }, markdown(c.description || "", { class: "desc", id: "challenge-description" }));
  if (c.connection_info) about.append(h("h2", {}, "Connection"), h("p", { class: "desc mono" }, c.connection_info));
  if (c.files && c.files.length) {
    about.append(
      h("h2", {}, "Files"),
      h(
        "ul",
        { id: "challenge-files" },
        c.files.map((url) => {
          const name = decodeURIComponent(url.split("?")[0].split("/").pop() || "file");
          return h("li", {}, h("a", { href: url, download: name, rel: "noreferrer" }, name));
        }),
      ),
    );
  }
  put(view, about);
  if (c.hints && c.hints.length) put(view, hintsPanel(c.hints));
  if (c.instance) put(view, instancePanel(c, current));
  put(view, flagPanel(c, attemptsLeft));
}

function hintsPanel(hints) {
  const section = h("section", { class: "card", "aria-labelledby": "hints-title" }, h("h2", { id: "hints-title" }, "Hints"));
  const list = h("ul", { class: "plain", id: "hints" });
  for (const hint of hints) {
    const body = h("div", { class: "desc", "aria-live": "polite" });
    const msg = h("p", { class: "msg", "aria-live": "polite" });
    const show = async () => {
      const answer = await api("GET", `/hints/${hint.id}`);
      if (!answer.ok) return say(msg, answer.message, "bad");
      if (answer.data.view === "locked") {
        body.replaceChildren(
          h(
            "button",
            {
              type: "button",
              onclick: async () => {
                if (!confirm(`Unlock this hint for ${hint.cost} points?`)) return;
                const unlock = await api("POST", "/unlocks", { target: hint.id, type: "hints" });
                if (!unlock.ok) return say(msg, unlock.message, "bad");
                say(msg, `Unlocked for ${hint.cost} points.`, "ok");
                show();
              },
            },
            `Unlock for ${hint.cost} point${hint.cost === 1 ? "" : "s"}`,
          ),
        );
      } else {
        body.replaceChildren(markdown(answer.data.content ?? "", { class: "desc" }));
      }
    };
    list.append(
      h(
        "li",
        {},
        h("div", { class: "row" }, h("strong", {}, hint.title || `Hint ${hint.id}`), h("span", { class: "muted" }, hint.cost ? `costs ${hint.cost}` : "free"), h("button", { type: "button", class: "secondary", onclick: show }, "Show")),
        body,
        msg,
      ),
    );
  }
  section.append(list);
  return section;
}

function flagPanel(c, attemptsLeft) {
  const msg = messageLine("flag-msg");
  const input = h("input", { id: "flag-input", name: "submission", required: true, autocomplete: "off", spellcheck: "false", placeholder: "FCTF{...}" });
  const button = h("button", { type: "submit", id: "flag-submit" }, "Submit");
  const form = h(
    "form",
    { id: "flag-form", class: "card", "aria-labelledby": "flag-title" },
    h("h2", { id: "flag-title" }, "Submit the flag"),
    h("label", {}, "Flag", input),
    attemptsLeft !== null ? h("p", { class: "muted", id: "flag-attempts" }, `${attemptsLeft} tr${attemptsLeft === 1 ? "y" : "ies"} left.`) : null,
    h("div", { class: "row" }, button),
    msg,
  );
  if (c.solved_by_me) {
    input.disabled = true;
    button.disabled = true;
    say(msg, "Your team solved this challenge.", "ok");
  }
  let cooldown = 0;
  const tick = () => {
    if (cooldown <= 0) {
      button.disabled = false;
      button.textContent = "Submit";
      return;
    }
    button.disabled = true;
    button.textContent = `Wait ${cooldown} s`;
    cooldown -= 1;
    later(1000, tick);
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submission = input.value.trim();
    if (!submission) return;
    button.disabled = true;
    say(msg, "Checking…");
    const answer = await api("POST", "/challenges/attempt", { challenge_id: c.id, submission });
    button.disabled = false;
    if (!answer.ok) {
      say(msg, answer.message, "bad");
      if (answer.retryAfter) {
        cooldown = answer.retryAfter;
        tick();
      }
      return;
    }
    const { status, message } = answer.data;
    const kind = status === "correct" ? "ok" : status === "already_solved" ? "warn" : "bad";
    say(msg, message || status, kind);
    if (status === "correct" || status === "already_solved") {
      c.solved_by_me = true;
      input.disabled = true;
      button.disabled = true;
      toast(status === "correct" ? "Correct!" : "Already solved.");
      refreshInstance?.();
    }
  });
  return form;
}

// The live instance panel's refresh, while a challenge page with an instance is shown.
let refreshInstance = null;

function instancePanel(c, current) {
  const protocol = c.instance.protocol || "http";
  const state = h("p", { id: "instance-state", "aria-live": "polite" }, "Checking…");
  const detail = h("div", { id: "instance-detail" });
  const conn = h("div", { class: "conn", id: "instance-connection" });
  const msg = messageLine("instance-msg");
  const start = h("button", { type: "button", id: "instance-start" }, "Start");
  const extend = h("button", { type: "button", class: "secondary", id: "instance-extend" }, "Extend");
  const stop = h("button", { type: "button", class: "danger", id: "instance-stop" }, "Stop");
  const section = h(
    "section",
    { class: "card", id: "instance", "aria-labelledby": "instance-title" },
    h("h2", { id: "instance-title" }, "Your instance"),
    h("p", { class: "muted" }, protocol === "tcp" ? "A TCP service of your team's own." : "A web service of your team's own."),
    state,
    detail,
    conn,
    h("div", { class: "row" }, start, extend, stop),
    msg,
  );
  let status = null;
  let countdown = null;
  let lastKey = "";

  const show = (s) => {
    status = s;
    const live = s && s.instance && !["stopped", "failed"].includes(s.state);
    const st = s && s.instance ? s.state : "none";
    const stateText = {
      none: "Not running.",
      queued: s?.queue_position !== null && s?.queue_position !== undefined ? `Queued: position ${s.queue_position + 1} in line.` : "Queued.",
      deploying: "Starting…",
      running: "Running.",
      stopping: "Stopping…",
      stopped: "Stopped.",
      failed: `Failed${s?.reason ? `: ${s.reason}` : "."}`,
    }[st] ?? st;
    state.replaceChildren(h("span", { class: `state ${st}` }, stateText));
    // A solved challenge needs no instance (the API refuses to start one).
    start.hidden = live || c.solved_by_me;
    if (!live) say(msg, c.solved_by_me ? "Solved: this challenge's instance is no longer needed." : "");
    // "Start requested." and the like hold only until the state they asked for is reached.
    else if (st === "running" && msg.dataset.until === "running") say(msg, "");
    stop.hidden = !live;
    extend.hidden = st !== "running";
    extend.disabled = !(s?.extensions_left > 0);
    extend.title = s?.extensions_left > 0 ? "" : "No extensions left (or not yet in the extension window).";
    detail.replaceChildren();
    if (st === "running") {
      const left = h("span", { id: "instance-time" });
      const expires = s.expires_at_ms ?? Date.now() + (s.time_left_secs || 0) * 1000;
      const paint = () => {
        const secs = (expires - Date.now()) / 1000;
        left.textContent = secs > 0 ? duration(secs) : "expired";
      };
      paint();
      if (countdown) clearInterval(countdown);
      countdown = setInterval(paint, 1000);
      timers.push(countdown);
      detail.append(
        h("p", {}, "Time left: ", left, s.extensions_left !== undefined ? h("span", { class: "muted" }, ` · ${s.extensions_left} extension${s.extensions_left === 1 ? "" : "s"} left`) : null),
      );
    }
    // The connection block is rebuilt only when it changes, so a copy button keeps its focus.
    const access = st === "running" ? s.access : null;
    const key = access ? JSON.stringify(access) : "";
    if (key !== lastKey) {
      lastKey = key;
      conn.replaceChildren();
      if (access && protocol === "http" && access.http_url) {
        conn.append(
          h("p", {}, h("a", { id: "instance-link", class: "button", href: access.http_url, target: "_blank", rel: "noopener noreferrer" }, "Open the instance ↗")),
          h("p", { class: "muted" }, "The link signs this browser in to your instance once; keep it to yourself."),
        );
      } else if (access) {
        const nc = access.nc || `nc ${access.tcp_host} ${access.tcp_port}`;
        conn.append(
          h("p", {}, "Connect, then send the token as the first line:"),
          copyLine("instance-nc", nc, "Copy the nc command"),
          copyLine("instance-token", access.token, "Copy the token"),
        );
      }
    }
  };

  const refresh = async () => {
    const answer = await api("GET", `/challenges/${c.id}/instance`);
    if (!current()) return;
    if (!answer.ok) {
      say(msg, answer.message, "bad");
      return;
    }
    show(answer.data);
    // Poll fast while something moves, slowly while it runs.
    const moving = answer.data?.instance && ["queued", "deploying", "stopping"].includes(answer.data.state);
    later(moving ? 1000 : 15000, refresh);
  };
  refreshInstance = () => later(500, refresh);

  const act = (button, method, path, done) => async () => {
    button.disabled = true;
    say(msg, "…");
    delete msg.dataset.until;
    const answer = await api(method, path);
    button.disabled = false;
    if (!answer.ok) {
      say(msg, answer.message + (answer.retryAfter ? ` (try again in ${answer.retryAfter} s)` : ""), "bad");
      return;
    }
    say(msg, done, "ok");
    if (method === "POST" && path.endsWith("/instance")) msg.dataset.until = "running";
    show(answer.data);
    later(1000, refresh);
  };
  start.addEventListener("click", act(start, "POST", `/challenges/${c.id}/instance`, "Start requested."));
  stop.addEventListener("click", act(stop, "DELETE", `/challenges/${c.id}/instance`, "Stop requested."));
  extend.addEventListener("click", act(extend, "POST", `/challenges/${c.id}/instance/extend`, "Extended."));
  refresh();
  return section;
}

// ---- pages: scoreboard ----

async function viewScoreboard(view, _arg, current) {
  const brackets = await api("GET", "/brackets");
  if (!current()) return;
  const teamBrackets = brackets.ok ? (brackets.data || []).filter((b) => b.type !== "users") : [];
  let bracket = sessionStorage.getItem("fctf.bracket") || "";
  put(view, h("h1", {}, "Scoreboard"));
  const c = session.contest;
  if (c && c.freeze_ms && (c.phase === "frozen" || (c.phase === "ended" && Date.now() < c.freeze_ms))) {
    put(view, h("p", { class: "card", id: "freeze-notice", role: "note" }, `The scoreboard is frozen since ${when(c.freeze_ms)}: solves after that show once the contest ends. Your own solves still show on the challenges page.`));
  } else if (c && c.freeze_ms && c.phase === "running") {
    put(view, h("p", { class: "muted", id: "freeze-notice" }, `The scoreboard freezes at ${when(c.freeze_ms)}.`));
  }
  if (teamBrackets.length) {
    const select = h("select", { id: "bracket" }, h("option", { value: "" }, "All brackets"), teamBrackets.map((b) => h("option", { value: b.id }, b.name)));
    select.value = bracket;
    select.addEventListener("change", () => {
      bracket = select.value;
      sessionStorage.setItem("fctf.bracket", bracket);
      load();
    });
    put(view, h("div", { class: "row" }, h("label", {}, "Bracket", select)));
  }
  const table = h("div", { class: "table-wrap", id: "scoreboard", "aria-live": "polite" });
  put(view, table);
  const load = async () => {
    const answer = await api("GET", `/scoreboard${bracket ? `?bracket_id=${encodeURIComponent(bracket)}` : ""}`);
    if (!current()) return;
    if (!answer.ok) return table.replaceChildren(h("p", { class: "msg bad" }, answer.message));
    const rows = answer.data || [];
    if (!rows.length) return table.replaceChildren(h("p", { class: "muted" }, "No scores yet."));
    const mine = session.team?.id;
    table.replaceChildren(
      h(
        "table",
        {},
        h("caption", { class: "muted" }, `Updated ${new Date().toLocaleTimeString()}`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num place" }, "Place"), h("th", { scope: "col" }, "Team"), teamBrackets.length ? h("th", { scope: "col" }, "Bracket") : null, h("th", { scope: "col", class: "num" }, "Score"))),
        h(
          "tbody",
          {},
          rows.map((r) =>
            h(
              "tr",
              { class: r.account_id === mine ? "mine" : null, "aria-current": r.account_id === mine ? "true" : null },
              h("td", { class: "num" }, String(r.pos)),
              h("td", {}, r.name),
              teamBrackets.length ? h("td", {}, r.bracket_name || "") : null,
              h("td", { class: "num" }, String(r.score)),
            ),
          ),
        ),
      ),
    );
  };
  await load();
  every(15000, load);
}

// ---- pages: notifications ----

const SEEN = "fctf.notifications.seen";

async function viewNotifications(view, _arg, current) {
  const answer = await api("GET", "/notifications");
  if (!current()) return;
  put(view, h("h1", {}, "Notifications"));
  if (!answer.ok) return put(view, h("p", { class: "msg bad", role: "alert" }, answer.message));
  const list = answer.data || [];
  if (!list.length) return put(view, h("p", { class: "muted" }, "Nothing yet."));
  const seen = Number(localStorage.getItem(SEEN) || 0);
  put(view, 
    h(
      "ul",
      { class: "plain card", id: "notifications" },
      list.map((n) => h("li", {}, h("h2", {}, n.title, n.id > seen ? h("span", { class: "badge" }, "new") : null), h("p", { class: "muted" }, when(n.date)), markdown(n.content, { class: "desc" }))),
    ),
  );
  localStorage.setItem(SEEN, String(Math.max(seen, ...list.map((n) => n.id))));
  checkUnread();
}

async function checkUnread() {
  if (!session.me) return;
  const seen = Number(localStorage.getItem(SEEN) || 0);
  const answer = await api("GET", `/notifications?since_id=${seen}`);
  const badge = $("#unread");
  const count = answer.ok ? (answer.data || []).filter((n) => n.id > seen).length : 0;
  badge.textContent = String(count);
  badge.hidden = count === 0;
  badge.setAttribute("aria-label", `${count} unread`);
}

// ---- pages: tickets ----

async function viewTickets(view, _arg, current) {
  const [tickets, challenges] = await Promise.all([api("GET", "/tickets"), api("GET", "/challenges")]);
  if (!current()) return;
  const msg = messageLine("ticket-msg");
  const options = challenges.ok ? (challenges.data || []).filter((c) => c.type !== "hidden") : [];
  const form = h(
    "form",
    { id: "ticket-form", class: "card", "aria-labelledby": "ticket-title-h" },
    h("h2", { id: "ticket-title-h" }, "Ask the organisers"),
    field("Title", { id: "ticket-title", required: true, maxlength: 200 }),
    h("label", {}, "About", h("select", { id: "ticket-challenge" }, h("option", { value: "" }, "Nothing in particular"), options.map((c) => h("option", { value: c.id }, c.name)))),
    h("label", {}, "Your question", h("textarea", { id: "ticket-content", required: true })),
    h("button", { type: "submit" }, "Send"),
    msg,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { title: $("#ticket-title").value.trim(), content: $("#ticket-content").value.trim() };
    const challenge = $("#ticket-challenge").value;
    if (challenge) body.challenge_id = Number(challenge);
    const answer = await api("POST", "/tickets", body);
    if (!answer.ok) return say(msg, answer.message, "bad");
    toast("Ticket sent.");
    render();
  });
  put(view, h("h1", {}, "Tickets"), form);
  if (!tickets.ok) return put(view, h("p", { class: "msg bad", role: "alert" }, tickets.message));
  const list = tickets.data || [];
  put(view, h("h2", {}, "Your tickets"));
  if (!list.length) return put(view, h("p", { class: "muted" }, "None yet."));
  const names = new Map(options.map((c) => [c.id, c.name]));
  put(view, 
    h(
      "ul",
      { class: "plain card", id: "tickets" },
      list.map((t) => {
        const closeMsg = h("span", { class: "msg", "aria-live": "polite" });
        return h(
          "li",
          {},
          h("h3", {}, t.title, " ", h("span", { class: `state ${t.state === "open" ? "queued" : ""}` }, `(${t.state})`)),
          h("p", { class: "muted" }, when(t.date), t.challenge_id ? ` · ${names.get(t.challenge_id) ?? `challenge ${t.challenge_id}`}` : ""),
          h("p", { class: "desc" }, t.content),
          t.response ? h("p", { class: "desc" }, h("strong", {}, "Answer: "), t.response) : null,
          t.state === "open"
            ? h(
                "div",
                { class: "row" },
                h(
                  "button",
                  {
                    type: "button",
                    class: "secondary",
                    onclick: async () => {
                      const answer = await api("POST", `/tickets/${t.id}/close`);
                      if (!answer.ok) return say(closeMsg, answer.message, "bad");
                      toast("Ticket closed.");
                      render();
                    },
                  },
                  "Close",
                ),
                closeMsg,
              )
            : null,
        );
      }),
    ),
  );
}

// ---- start ----

async function main() {
  await refreshSession();
  await render();
  setInterval(checkUnread, 30000);
  checkUnread();
}

main();
