// Ferry console: the operator's token (kept in sessionStorage), the confirmation dialog, and the actions.
// Every action asks the console for the sentence naming its consequence, shows it, and only on
// "Confirm" sends the change with the token as a bearer credential.
"use strict";

(function () {
  const TOKEN_KEY = "ferry.token";
  const FLASH_KEY = "ferry.flash";

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showResult(text, ok) {
    const area = document.getElementById("action-result");
    if (!area) return;
    area.textContent = text;
    area.classList.toggle("error", !ok);
    area.classList.toggle("success", ok);
    area.hidden = false;
  }

  function confirmWith(text) {
    const dialog = document.getElementById("confirm-dialog");
    document.getElementById("confirm-text").textContent = text;
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function () { resolve(dialog.returnValue === "ok"); }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      document.getElementById("confirm-ok").focus();
    });
  }

  async function postJson(url, body, withToken) {
    const headers = { "Content-Type": "application/json" };
    if (withToken && token()) headers.Authorization = "Bearer " + token();
    const response = await fetch(url, { method: "POST", headers: headers, body: JSON.stringify(body) });
    let answer = {};
    try { answer = await response.json(); } catch (error) { answer = {}; }
    return { ok: response.ok, status: response.status, body: answer };
  }

  function reason(required) {
    const field = document.getElementById("reason-input");
    const text = field ? field.value.trim() : "";
    if (required && !text) return null;
    return text || "by hand, from the console";
  }

  function weight(id) {
    const value = Number(document.getElementById(id).value);
    return Math.min(Math.max(value, 0), 100) / 100;
  }

  function deploymentBody(button) {
    const kind = button.dataset.kind;
    const version = Number((document.getElementById("promote-version") || {}).value);
    if (kind === "rollback") return { action: "rollback", version: Number(button.dataset.version), reason: reason(false) };
    if (kind === "canary") return { action: "set_canary_weight", canary_weight: weight("canary-weight"), reason: reason(false) };
    if (kind === "force") {
      const why = reason(true);
      return why ? { action: "promote", version: version, force: true, reason: why } : null;
    }
    const body = { action: "promote", version: version, reason: reason(false) };
    if (document.getElementById("promote-canary").checked) body.canary_weight = weight("promote-weight");
    return body;
  }

  async function act(url, previewUrl, body, consequence) {
    if (!token()) { showResult("Enter your token in the Token field first: every action needs it.", false); return; }
    let text = consequence;
    if (!text) {
      const preview = await postJson(previewUrl, body, false);
      if (!preview.ok) { showResult(preview.body.error || "the console could not describe this action", false); return; }
      text = preview.body.consequence;
    }
    if (!(await confirmWith(text))) return;
    const answer = await postJson(url, body, true);
    if (!answer.ok) {
      showResult("Refused (" + answer.status + "): " + (answer.body.error || "no reason given"), false);
      return;
    }
    sessionStorage.setItem(FLASH_KEY, "Done: " + text);
    window.location.reload();
  }

  function wireDeployment(panel) {
    const base = "/api/models/" + encodeURIComponent(panel.dataset.model) + "/deployment";
    panel.querySelectorAll("button[data-kind]").forEach(function (button) {
      button.addEventListener("click", function () {
        const body = deploymentBody(button);
        if (!body) { showResult("Forcing needs a reason: write it in the Reason field.", false); return; }
        act(base, base + "/preview", body, null).catch(function (error) { showResult(String(error), false); });
      });
    });
  }

  function wireReplays() {
    document.querySelectorAll("button[data-testid='replay-button']").forEach(function (button) {
      button.addEventListener("click", function () {
        const url = "/api/v1/dead-letters/" + encodeURIComponent(button.dataset.topic) + "/replay";
        act(url, null, { id: button.dataset.ident }, button.dataset.consequence)
          .catch(function (error) { showResult(String(error), false); });
      });
    });
  }

  function wireToken() {
    const field = document.getElementById("token-input");
    if (!field) return;
    field.value = token();
    field.addEventListener("input", function () { sessionStorage.setItem(TOKEN_KEY, field.value.trim()); });
    document.getElementById("token-forget").addEventListener("click", function () {
      sessionStorage.removeItem(TOKEN_KEY);
      field.value = "";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireToken();
    const flash = sessionStorage.getItem(FLASH_KEY);
    if (flash) { sessionStorage.removeItem(FLASH_KEY); showResult(flash, true); }
    const panel = document.querySelector("[data-testid='actions']");
    if (panel) wireDeployment(panel);
    wireReplays();
  });
})();
