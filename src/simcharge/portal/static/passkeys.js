// simcharge: passkeys (WebAuthn), one script for the customer portal and the back office (both
// load it from /static/portal/passkeys.js: one application, one origin, so `script-src 'self'`
// lets both pages run it). The page says what to do in data-* attributes; nothing here names a
// route or holds a word of text:
//
//   #passkey-login        a sign-in button; data-options, data-login (the JSON routes),
//                         data-next, data-csrf (a token for the X-CSRF-Token header, if any),
//                         data-mode (sent as "mode" when present).
//   #passkey-second-step  the second step after the password: data-ceremony, data-public-key
//                         (the options, JSON), data-login, data-next, data-mode.
//   #passkey-add          a form (password, optional code and name, csrf); data-options,
//                         data-register, data-done; data-confirm (a route giving options to
//                         confirm with one of the holder's passkeys first) when the change
//                         asks for one: its answer goes with the options' request.
//   #passkey-confirm      a plain form that asks one of the holder's passkeys (data-confirm)
//                         unless its recovery `code` is filled; the answer, as JSON, goes in
//                         its hidden `credential` field and the form is sent as it is.
//   form.passkey-confirm  the same, for a page with several such forms (each with an id, its
//                         status element `<id>-status`): closing the account, removing a
//                         passkey, "Your details" — with data-held (JSON: a field's name ->
//                         the values the account holds), asked only when one of them changes.
//
// Each is hidden in the page and shown here only where the browser can use passkeys; everything
// else on those pages works without this file. The status element next to each (…-status)
// shows the server's problem (already in the reader's language) or its own data-cancelled
// words. Binary fields travel as base64url.
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
    var headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (csrf) { headers["X-CSRF-Token"] = csrf; }
    return fetch(url, {
      method: "POST", headers: headers, credentials: "same-origin", body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (json) {
        if (!r.ok) { throw json; }
        return json;
      });
    });
  }

  // What to tell the person: the server's problem, or the page's own words for a request the
  // browser cancelled, timed out or refused.
  function say(status, problem) {
    var text = problem && problem.detail;
    if (!text) { text = status.getAttribute("data-cancelled"); }
    status.textContent = text;
  }

  // A sign-in's answer, sent with the ceremony (and the mode, where the page asks one).
  function signIn(box, ceremony, credential) {
    var body = { ceremony: ceremony, credential: asJson(credential) };
    if (box.hasAttribute("data-mode")) { body.mode = box.getAttribute("data-mode"); }
    return post(box.getAttribute("data-login"), body, box.getAttribute("data-csrf"))
      .then(function (answer) {
        window.location.assign(answer.next || box.getAttribute("data-next"));
      });
  }

  // A button that runs `ceremony` and says why, on the status element, when it fails.
  function button(box, ceremony) {
    var status = document.getElementById(box.id + "-status");
    var go = box.querySelector("button");
    box.hidden = false;
    go.addEventListener("click", function () {
      go.disabled = true;
      status.textContent = "";
      ceremony().catch(function (problem) {
        go.disabled = false;
        say(status, problem);
      });
    });
  }

  var login = document.getElementById("passkey-login");
  if (login) {
    button(login, function () {
      var ceremony;
      return post(login.getAttribute("data-options"), {}, login.getAttribute("data-csrf"))
        .then(function (answer) {
          ceremony = answer.ceremony;
          return navigator.credentials.get({ publicKey: withBuffers(answer.public_key) });
        })
        .then(function (credential) { return signIn(login, ceremony, credential); });
    });
  }

  var second = document.getElementById("passkey-second-step");
  if (second) {
    button(second, function () {
      // The options are this sign-in's, used once: a second try signs in from the start.
      var options = JSON.parse(second.getAttribute("data-public-key"));
      return navigator.credentials.get({ publicKey: withBuffers(options) })
        .then(function (credential) {
          return signIn(second, second.getAttribute("data-ceremony"), credential);
        });
    });
  }

  // One of the holder's passkeys, asked to confirm a change: its answer, ready to send.
  function confirmed(url, csrf) {
    return post(url, {}, csrf)
      .then(function (answer) {
        return navigator.credentials.get({ publicKey: withBuffers(answer.public_key) });
      })
      .then(asJson);
  }

  var add = document.getElementById("passkey-add");
  if (add) {
    var addStatus = document.getElementById("passkey-add-status");
    var asked = ["password", "code"].map(function (name) {
      return add.querySelector("[name=" + name + "]");
    }).filter(Boolean);
    var csrf = add.querySelector("[name=csrf]").value;
    add.hidden = false;
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var submit = add.querySelector("button[type=submit]");
      var again = {};
      submit.disabled = true;
      addStatus.textContent = "";
      asked.forEach(function (f) {
        f.removeAttribute("aria-invalid");
        again[f.name] = f.value;
      });
      var first = add.hasAttribute("data-confirm")
        ? confirmed(add.getAttribute("data-confirm"), csrf)
          .then(function (answer) { again.credential = answer; })
        : Promise.resolve();
      first
        .then(function () { return post(add.getAttribute("data-options"), again, csrf); })
        .then(function (answer) {
          return navigator.credentials.create({ publicKey: withBuffers(answer.public_key) });
        })
        .then(function (credential) {
          var name = add.querySelector("[name=name]").value.trim();
          return post(add.getAttribute("data-register"), {
            credential: asJson(credential), name: name || null
          }, csrf);
        })
        .then(function () { window.location.assign(add.getAttribute("data-done")); })
        .catch(function (problem) {
          submit.disabled = false;
          var field = asked.filter(function (f) {
            return problem && problem.field === f.name;
          })[0];
          if (field) {
            field.setAttribute("aria-invalid", "true");
            field.focus();
          }
          say(addStatus, problem);
        });
    });
  }

  // Whether a form with data-held (a JSON object: a field's name -> the values the account
  // holds) changes one of them: a value not empty and none of those (the server's own rule,
  // portal/profile._changed). Without data-held every submit is a change.
  function changes(form) {
    var held = form.getAttribute("data-held");
    if (!held) { return true; }
    held = JSON.parse(held);
    return Object.keys(held).some(function (name) {
      var input = form.querySelector("[name=" + name + "]");
      var value = input ? input.value.trim() : "";
      return value !== "" && held[name].indexOf(value) < 0;
    });
  }

  // A plain form confirmed by one of the holder's passkeys, unless a recovery code is typed or
  // nothing that needs confirming changes.
  function confirmForm(form) {
    var status = document.getElementById(form.id + "-status");
    form.addEventListener("submit", function (event) {
      var code = form.querySelector("[name=code]");
      if (code && code.value.trim()) { return; }  // a recovery code: sent as it is
      if (!changes(form)) { return; }  // nothing to confirm: sent as it is
      event.preventDefault();
      var submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      status.textContent = "";
      confirmed(form.getAttribute("data-confirm"), form.querySelector("[name=csrf]").value)
        .then(function (answer) {
          form.querySelector("[name=credential]").value = JSON.stringify(answer);
          form.submit();
        })
        .catch(function (problem) {
          submit.disabled = false;
          say(status, problem);
        });
    });
  }

  var confirm = document.getElementById("passkey-confirm");
  if (confirm) { confirmForm(confirm); }
  Array.prototype.forEach.call(
    document.querySelectorAll("form.passkey-confirm[data-confirm]"), confirmForm
  );
})();
