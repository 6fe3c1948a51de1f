// simcharge back office: passkeys (WebAuthn). The sign-in button and the "add a passkey" form
// are hidden in the page and shown here only where the browser can use passkeys; everything
// else on those pages works without this file. The ceremonies go through the back office's JSON
// routes (/backoffice/login/passkey…, /backoffice/account/passkeys…), whose binary fields are
// base64url; the CSRF token travels in the X-CSRF-Token header.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials || !window.fetch) { return; }

  function toBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) { base64 += "="; }
    var binary = window.atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) { bytes[i] = binary.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) { return null; }
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) { binary += String.fromCharCode(bytes[i]); }
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withBuffers(options) {
    options.challenge = toBuffer(options.challenge);
    if (options.user) { options.user.id = toBuffer(options.user.id); }
    ["allowCredentials", "excludeCredentials"].forEach(function (list) {
      (options[list] || []).forEach(function (c) { c.id = toBuffer(c.id); });
    });
    return options;
  }

  function asJson(credential) {
    var r = credential.response;
    var response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      response.userHandle = toText(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || null
    };
  }

  // POST as JSON; resolves with the answer's body, rejects with the problem (or a stand-in).
  function post(url, body, csrf) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json",
                 "X-CSRF-Token": csrf },
      credentials: "same-origin",
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (json) {
        if (!r.ok) { throw json; }
        return json;
      });
    });
  }

  // The server's problem (already in the page's language), else the page's own words for a
  // request the browser cancelled, timed out or refused.
  function say(status, problem) {
    var text = problem && problem.detail;
    if (!text) { text = status.getAttribute("data-cancelled"); }
    status.textContent = text;
  }

  var login = document.getElementById("passkey-login");
  if (login) {
    var loginStatus = document.getElementById("passkey-login-status");
    var button = login.querySelector("button");
    var loginCsrf = document.querySelector("form[action='/backoffice/login'] [name=csrf]").value;
    login.hidden = false;
    button.addEventListener("click", function () {
      var ceremony;
      button.disabled = true;
      loginStatus.textContent = "";
      post("/backoffice/login/passkey/options", {}, loginCsrf)
        .then(function (answer) {
          ceremony = answer.ceremony;
          return navigator.credentials.get({ publicKey: withBuffers(answer.public_key) });
        })
        .then(function (credential) {
          return post("/backoffice/login/passkey", {
            ceremony: ceremony, credential: asJson(credential)
          }, loginCsrf);
        })
        .then(function (answer) { window.location.assign(answer.next || login.getAttribute("data-next")); })
        .catch(function (problem) {
          button.disabled = false;
          say(loginStatus, problem);
        });
    });
  }

  var add = document.getElementById("passkey-add");
  if (add) {
    var addStatus = document.getElementById("passkey-add-status");
    var password = add.querySelector("[name=password]");
    var code = add.querySelector("[name=code]");
    var csrf = add.querySelector("[name=csrf]").value;
    add.hidden = false;
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var submit = add.querySelector("button[type=submit]");
      submit.disabled = true;
      addStatus.textContent = "";
      [password, code].forEach(function (f) { f.removeAttribute("aria-invalid"); });
      post("/backoffice/account/passkeys/options", { password: password.value, code: code.value }, csrf)
        .then(function (answer) {
          return navigator.credentials.create({ publicKey: withBuffers(answer.public_key) });
        })
        .then(function (credential) {
          var name = add.querySelector("[name=name]").value.trim();
          return post("/backoffice/account/passkeys", {
            credential: asJson(credential), name: name || null
          }, csrf);
        })
        .then(function () { window.location.assign(add.getAttribute("data-done")); })
        .catch(function (problem) {
          submit.disabled = false;
          var field = problem && problem.field === "code" ? code
            : problem && problem.field === "password" ? password : null;
          if (field) {
            field.setAttribute("aria-invalid", "true");
            field.focus();
          }
          say(addStatus, problem);
        });
    });
  }
})();
