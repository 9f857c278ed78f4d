// Calls to the service's JSON API: the API key, errors, uploads with progress, images and
// downloads behind the key, and the live event stream read with fetch (an EventSource cannot
// send an Authorization header, and the key never goes into a URL).

const ROOT = document.documentElement.dataset.root || "";
const KEY_STORAGE = "cnn-api-key";

/** A path of this service (API or page) under the root path it is served at. */
export const rooted = (path) => ROOT + path;

/**
 * An API answer that is not 2xx: its one-sentence `detail` (the message), and for a 422 the
 * `errors` the server found, each with the `loc` of the field it concerns.
 */
export class ApiError extends Error {
  constructor(status, detail, errors = []) {
    super(typeof detail === "string" && detail ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.errors = Array.isArray(errors) ? errors : [];
  }

  static async from(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = { detail: response.statusText || null };
    }
    return new ApiError(response.status, body?.detail, body?.errors);
  }

  /** Each problem's message keyed by its field path, without the leading "body"/"query"
   * and without list indices ("architecture.layers.filters"). */
  fieldErrors() {
    const fields = new Map();
    for (const issue of this.errors) {
      if (!Array.isArray(issue.loc) || issue.loc.length < 2) continue;
      const path = issue.loc.slice(1).filter((part) => typeof part === "string").join(".");
      if (!fields.has(path)) fields.set(path, issue.msg);
    }
    return fields;
  }
}

let keyRequest = null;

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function withKey(headers = {}) {
  const key = storedKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

/** Ask for the key once, however many calls were refused at the same moment. */
function askForKey(wasWrong) {
  keyRequest ??= new Promise((resolve) => {
    const dialog = document.getElementById("key-dialog");
    const form = document.getElementById("key-form");
    const input = document.getElementById("key-input");
    document.getElementById("key-error").textContent = wasWrong
      ? "The server refused that key; check CNN_API_KEY."
      : "";
    input.value = "";
    form.addEventListener(
      "submit",
      () => {
        sessionStorage.setItem(KEY_STORAGE, input.value);
        showForgetButton();
        keyRequest = null;
        resolve();
      },
      { once: true },
    );
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    dialog.showModal();
    input.focus();
  });
  return keyRequest;
}

export function showForgetButton() {
  const button = document.getElementById("forget-key");
  button.hidden = storedKey() === null;
  button.onclick = () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  };
}

/** fetch() an API path with the key; asks for the key on 401 and retries; throws ApiError. */
export async function request(path, { method = "GET", json, body, headers = {}, signal } = {}) {
  for (;;) {
    const init = { method, headers: withKey(headers), signal };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    const response = await fetch(rooted(path), init);
    if (response.status === 401) {
      await askForKey(storedKey() !== null);
      continue;
    }
    if (!response.ok) throw await ApiError.from(response);
    return response;
  }
}

export const getJSON = async (path, options) => (await request(path, options)).json();

export async function postJSON(path, json) {
  const response = await request(path, { method: "POST", json });
  return response.status === 204 ? null : response.json();
}

/** POST a multipart form with upload progress (fetch cannot report it); resolves to the JSON. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", rooted(path));
    for (const [name, value] of Object.entries(withKey())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onerror = () => reject(new ApiError(0, "The upload failed: the server closed the connection"));
    xhr.onload = async () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 401) {
        await askForKey(storedKey() !== null);
        upload(path, form, onProgress).then(resolve, reject);
      } else if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
      } else {
        reject(new ApiError(xhr.status, body?.detail ?? xhr.statusText, body?.errors));
      }
    };
    xhr.send(form);
  });
}

/** An object URL for an API resource (an <img src> could not carry the key). */
export async function blobUrl(path) {
  const response = await request(path);
  return URL.createObjectURL(await response.blob());
}

/** Save an API resource as a file. */
export async function download(path, filename) {
  const href = await blobUrl(path);
  const link = document.createElement("a");
  link.href = href;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follow a server-sent event stream until an `end` event, from `lastId` on (null: from the
 * start). After a dropped connection it reconnects (after the server's `retry`, 1 s by
 * default) with `Last-Event-ID`, so the server sends only what came after. `onEvent(name,
 * data)` gets every event with JSON data; `onState` gets "connecting", "live",
 * "reconnecting", "ended" or an ApiError. Returns a function that stops following.
 */
export function follow(path, lastId, onEvent, onState) {
  let retryMs = 1000;
  let stopped = false;
  let controller = null;

  const dispatch = (event) => {
    if (event.id !== null) lastId = event.id;
    if (!event.data.length) return false;
    onEvent(event.name, JSON.parse(event.data.join("\n")));
    return event.name === "end";
  };

  async function readOnce() {
    controller = new AbortController();
    const headers = { Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await request(path, { headers, signal: controller.signal });
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { name: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (dispatch(event)) return true;
          event = { name: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.name = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
        else if (field === "retry" && /^\d+$/.test(text)) retryMs = Number(text);
      }
    }
  }

  (async () => {
    onState("connecting");
    while (!stopped) {
      try {
        if (await readOnce()) {
          stopped = true;
          onState("ended");
          return;
        }
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
          onState(error);
          return;
        }
      }
      if (stopped) return;
      onState("reconnecting");
      await sleep(retryMs);
    }
  })();

  return () => {
    stopped = true;
    controller?.abort();
  };
}
