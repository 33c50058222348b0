// Keyplane console: the only script besides htmx. No inline script anywhere (CSP).
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  // htmx requests carry the session's CSRF token as a header; forms carry it as a field.
  document.addEventListener("htmx:configRequest", function (event) {
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });
  // Copy buttons: data-copy names the element whose text is copied.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });
  // Links mailed or logged carry their token in the fragment, which browsers never send to a
  // server: copy it into the form, then drop it from the address bar and history.
  var form = document.querySelector("form[data-token-from-fragment]");
  if (form) {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    var input = form.querySelector('input[name="token"]');
    if (match && input && !input.value) {
      input.value = decodeURIComponent(match[1]);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    // A token that came with the link needs no field; without one, the field stays to paste it.
    if (input && input.value) {
      input.closest(".field").hidden = true;
    } else {
      var missing = document.getElementById("token-missing");
      if (missing) { missing.hidden = false; }
    }
  }
})();
