// "Wrong? The right answer is ...": sends the photo on show (#result-image) with the chosen
// class to POST /feedback, without leaving the page. Without JavaScript the form posts the
// page's own copy of the photo (a hidden data: URL) and the server redirects back.
(function () {
  const form = document.getElementById("feedback-form");
  if (!form || !window.fetch) return;
  const status = document.getElementById("feedback-status");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = document.getElementById("feedback-label").value;
    status.textContent = "Sending…";
    try {
      const photo = await (await fetch(document.getElementById("result-image").src)).blob();
      const body = new FormData();
      body.append("file", photo, "photo");
      body.append("label", label);
      // Without ?from_page the server answers JSON (errors included), not the page.
      const res = await fetch(form.action.split("?")[0], { method: "POST", body: body,
                                             headers: { "Accept": "application/json" } });
      const data = await res.json().catch(() => null);
      status.textContent = res.ok ? "Thank you: saved as " + label + "."
        : ((data && data.error && data.error.message) || ("The server answered " + res.status + "."));
    } catch (e) {
      status.textContent = "The correction could not be sent: " + e.message;
    }
  });
}());
