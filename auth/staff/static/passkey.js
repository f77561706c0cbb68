// The passkey ceremony of the staff console: the one script the console runs, and only on
// its passkey pages. The page's form carries the server's WebAuthn options (data-options,
// JSON with base64url strings); on submit this asks the browser for a passkey
// (navigator.credentials.create or .get), puts the answer in the form's hidden
// `credential` field as JSON (base64url again) and sends the form. Nothing else is sent
// anywhere: no fetch, no third party. Without this script (or without WebAuthn) the form
// sends an empty credential and the server says so.
"use strict";
(function () {
  const form = document.getElementById("passkey-form");
  if (!form) return;
  const status = form.querySelector(".passkey-status");
  const say = (text) => { if (status) status.textContent = text; };

  const toBytes = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  };
  const toText = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const descriptors = (list) =>
    (list || []).map((item) => Object.assign({}, item, { id: toBytes(item.id) }));

  function creationOptions(options) {
    return Object.assign({}, options, {
      challenge: toBytes(options.challenge),
      user: Object.assign({}, options.user, { id: toBytes(options.user.id) }),
      excludeCredentials: descriptors(options.excludeCredentials),
    });
  }

  function requestOptions(options) {
    return Object.assign({}, options, {
      challenge: toBytes(options.challenge),
      allowCredentials: descriptors(options.allowCredentials),
    });
  }

  function answer(credential) {
    const response = credential.response;
    const out = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      out.response.attestationObject = toText(response.attestationObject);
      if (typeof response.getTransports === "function") {
        out.response.transports = response.getTransports();
      }
    } else {
      out.response.authenticatorData = toText(response.authenticatorData);
      out.response.signature = toText(response.signature);
      if (response.userHandle) out.response.userHandle = toText(response.userHandle);
    }
    return JSON.stringify(out);
  }

  form.addEventListener("submit", async (event) => {
    const field = form.elements.namedItem("credential");
    if (field.value) return; // the ceremony is done: this is the real submit
    event.preventDefault();
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say(form.dataset.unsupported);
      return;
    }
    try {
      const options = JSON.parse(form.dataset.options);
      const credential = form.dataset.ceremony === "create"
        ? await navigator.credentials.create({ publicKey: creationOptions(options) })
        : await navigator.credentials.get({ publicKey: requestOptions(options) });
      if (!credential) throw new Error("no credential");
      field.value = answer(credential);
      form.submit();
    } catch (error) {
      say(form.dataset.failed);
    }
  });
})();
