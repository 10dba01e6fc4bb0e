// /review without page loads: the queued items are fetched a few ahead (their images
// preloaded), a choice is posted in the background and the next item shows at once.
// Keys 1-9 pick the numbered class, 0 or x discards. Without JavaScript the same forms
// post and the server redirects to the next item.
(function () {
  const byId = (id) => document.getElementById(id);
  const section = byId("review-item");
  if (!section || !window.fetch) return;
  const [form, anyForm, image, caption, choices, empty, errorBox, remainingText] = [
    "review-form", "any-form", "review-image", "review-caption", "choices", "review-empty",
    "error", "remaining"].map(byId);
  const itemsUrl = section.dataset.itemsUrl;
  const ahead = Number(section.dataset.preload);
  const numbered = Number(section.dataset.numbered);
  const done = new Set();  // ids posted (or on their way): never shown again
  let queue = [], current = null, remaining = 0, fetching = null;

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  async function fill() {
    if (fetching) return fetching;
    const skip = [...done, ...queue.map((item) => item.id)];
    if (current) skip.push(current.id);
    const url = itemsUrl + "?count=" + ahead + "&skip=" + encodeURIComponent(skip.join(","));
    fetching = fetch(url, { headers: { "Accept": "application/json" } }).then(async (res) => {
      const data = await res.json();
      if (!res.ok) throw new Error(data.error ? data.error.message : res.status);
      const known = new Set(skip);
      for (const item of data.items) {
        if (!known.has(item.id)) { queue.push(item); new Image().src = item.image_url; }
      }
      remaining = data.remaining;
    }).catch((e) => showError("Could not load more images: " + e.message))
      .finally(() => { fetching = null; });
    return fetching;
  }

  function percent(p) { return Math.round(p * 100) + "\u00a0%"; }

  function button(choice, number) {
    const b = document.createElement("button");
    b.type = "submit"; b.name = "label"; b.value = choice.label; b.className = "choice";
    b.setAttribute("aria-keyshortcuts", String(number));
    const kbd = document.createElement("kbd"); kbd.textContent = number;
    const name = document.createElement("span"); name.className = "choice-label";
    name.textContent = " " + choice.label + " ";
    const p = document.createElement("span"); p.className = "muted";
    p.textContent = percent(choice.probability);
    b.append(kbd, name, p);
    return b;
  }

  function show(item) {
    current = item;
    remainingText.textContent = remaining + " left";
    section.hidden = !item;
    empty.hidden = !!item;
    if (!item) return;
    image.src = item.image_url;
    caption.textContent = "The model said " + item.label + " (" + percent(item.confidence) + "; " +
      (item.reason === "unsure" ? "not sure" : "a random sample") + "), version " +
      item.version + ", " + item.time;
    choices.replaceChildren(...item.top.slice(0, numbered).map((c, i) => button(c, i + 1)));
    form.action = anyForm.action = itemsUrl.replace(/items\.json$/, "items/" + item.id);
  }

  async function next() {
    if (!queue.length) await fill();
    show(queue.shift() || null);
    if (queue.length < 2) fill();
  }

  function send(fields) {
    if (!current) return;
    const item = current, body = new FormData();
    for (const [k, v] of Object.entries(fields)) body.append(k, v);
    done.add(item.id);
    remaining = Math.max(0, remaining - 1);
    fetch(form.action, { method: "POST", body: body, headers: { "Accept": "application/json" } })
      .then(async (res) => {
        if (res.ok || res.status === 404) return;  // 404: someone else took it
        const data = await res.json().catch(() => null);
        showError((data && data.error ? data.error.message : "The server answered " + res.status) +
                  " (image " + item.id.slice(0, 8) + " stays in the queue)");
      })
      .catch((e) => showError("Not sent: " + e.message));
    errorBox.hidden = true;
    next();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const by = event.submitter;
    send(by && by.name === "discard" ? { discard: "1" } : { label: by ? by.value : "" });
  });
  anyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    send({ label: byId("any-label").value });
  });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || !current) return;
    if (event.target.closest && event.target.closest("select, input, textarea")) return;
    if (event.key === "0" || event.key === "x" || event.key === "Delete") {
      event.preventDefault();
      send({ discard: "1" });
    } else if (/^[1-9]$/.test(event.key)) {
      const chosen = choices.querySelectorAll("button")[Number(event.key) - 1];
      if (chosen) { event.preventDefault(); send({ label: chosen.value }); }
    }
  });

  // The server drew the first item; the script takes over from the queue it fetches.
  fill().then(() => show(queue.shift() || null)).then(() => fill());
}());
