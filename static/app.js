// Progressive enhancement of the upload form: preview, drag-and-drop, paste,
// one-click examples and results without a page reload (POST /predict).
// Without this script the same form posts to / and the server renders the result.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  const input = document.getElementById("file");
  const zone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");
  const status = document.getElementById("status");
  const errorBox = document.getElementById("error");
  const result = document.getElementById("result");
  const predictUrl = form.dataset.predictUrl;
  const explainBox = document.getElementById("explain");
  let previewUrl = null;

  function setFile(file) {
    if (!file) return;
    const dt = new DataTransfer();
    dt.items.add(file);
    input.files = dt.files;
    showPreview(file);
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    preview.hidden = true;  // not an image (or one the browser cannot show): no broken icon
    preview.removeAttribute("src");
    if (file.type && !file.type.startsWith("image/")) return;  // untyped: try, onerror hides
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
  }

  preview.addEventListener("error", () => { preview.hidden = true; });

  function showError(message, code) {
    errorBox.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = "Sorry, that did not work. ";
    const text = document.createElement("span");
    text.className = "error-message";
    text.textContent = message;
    errorBox.append(strong, text);
    if (code) {
      const c = document.createElement("span");
      c.className = "error-code";
      c.textContent = " (" + code + ")";
      errorBox.append(c);
    }
    errorBox.hidden = false;
    result.hidden = true;
  }

  function showResult(data, imageUrl, filename) {
    errorBox.hidden = true;
    document.getElementById("result-unsure").hidden = !data.unsure;
    result.classList.toggle("unsure", Boolean(data.unsure));
    document.getElementById("result-label").textContent = data.label;
    document.getElementById("result-confidence").textContent = (data.confidence * 100).toFixed(1) + "%";
    document.getElementById("result-filename").textContent = filename || "";
    document.getElementById("result-version").textContent = "Model version " + data.version;
    document.getElementById("result-image").src = imageUrl;
    const bars = document.getElementById("bars");
    bars.replaceChildren();
    Object.entries(data.probabilities)
      .sort((a, b) => b[1] - a[1])
      .forEach(([label, p]) => {
        const li = document.createElement("li");
        li.className = "bar";
        const name = document.createElement("span");
        name.className = "bar-label";
        name.textContent = label;
        const track = document.createElement("span");
        track.className = "bar-track";
        const fill = document.createElement("span");
        fill.className = "bar-fill";
        fill.style.width = (p * 100).toFixed(1) + "%";
        track.append(fill);
        const value = document.createElement("span");
        value.className = "bar-value";
        value.textContent = (p * 100).toFixed(1) + "%";
        li.append(name, track, value);
        bars.append(li);
      });
    const explanation = document.getElementById("explanation");
    explanation.hidden = !data.explanation;
    if (data.explanation) {
      document.getElementById("explanation-image").src = data.explanation.image;
      document.getElementById("explanation-label").textContent = data.explanation.label;
    }
    result.hidden = false;
    document.title = (data.unsure ? "Not sure: " : "") + data.label + " · Image classifier";
  }

  // Slow mobile links: a large photo goes shrunk to the size the server decodes it to
  // (static/shrink.js), with the same answer as the original file.
  const decodeSide = Number(form.dataset.decodeSide) || 0;

  async function classify(file, filename) {
    status.textContent = "Preparing…";
    form.setAttribute("aria-busy", "true");
    const sent = await window.shrinkForUpload(file, decodeSide).catch(() => file);
    const body = new FormData();
    body.append("file", sent, filename || file.name || "upload");
    status.textContent = "Classifying…";
    try {
      const explain = explainBox && explainBox.checked ? "?explain=1" : "";
      const res = await fetch(predictUrl + explain, { method: "POST", body: body,
                                                      headers: { "Accept": "application/json" } });
      let data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      if (!res.ok || !data || data.error) {
        const err = (data && data.error) || {};
        showError(err.message || ("The server answered " + res.status + "."), err.code);
        status.textContent = "";
        return;
      }
      if (previewUrl === null) showPreview(file);
      showResult(data, previewUrl, filename || file.name);
      status.textContent = (data.unsure ? "Not sure — closest match: " : "Done: ") + data.label +
        ", " + (data.confidence * 100).toFixed(1) + "%." + (sent.note ? " (Photo " + sent.note + ".)" : "");
    } catch (e) {
      showError("Could not reach the server. Check your connection and try again.");
      status.textContent = "";
    } finally {
      form.removeAttribute("aria-busy");
    }
  }

  input.addEventListener("change", () => { if (input.files[0]) showPreview(input.files[0]); });

  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
    e.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) {
      setFile(file);
      if (predictUrl) classify(file);
    }
  });

  document.addEventListener("paste", (e) => {
    const items = (e.clipboardData && e.clipboardData.files) || [];
    if (items.length) {
      e.preventDefault();
      setFile(items[0]);
      if (predictUrl) classify(items[0], items[0].name || "pasted image");
    }
  });

  if (!predictUrl) return; // API key set: the plain form posts to / instead

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = input.files[0];
    if (!file) { showError("Choose a photo first.", "missing_file"); return; }
    classify(file);
  });

  document.querySelectorAll("button.example").forEach((button) => {
    button.addEventListener("click", async (e) => {
      e.preventDefault();
      try {
        const res = await fetch(button.dataset.src);
        if (!res.ok) throw new Error(String(res.status));
        const blob = await res.blob();
        const name = button.value.split("/").pop();
        const file = new File([blob], name, { type: blob.type });
        setFile(file);
        classify(file, name);
      } catch (err) {
        showError("Could not load that example.");
      }
    });
  });
})();
