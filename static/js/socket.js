/**
 * The viewer's WebSocket to the proxy, reconnecting with exponential backoff.
 *
 * A handshake the server refuses (no session, expired session) is indistinguishable in
 * the browser from a network failure (close code 1006), so after a connection that never
 * opened, or after repeated failures, we ask the server whether the session still exists:
 * a GET of the viewer page that answers with a redirect means "log in again". A socket the
 * server closes with code 4001 means the session ended, so we leave at once.
 */

export const SESSION_ENDED = 4001;
export const PERMISSIONS_CHANGED = 4002;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;

/** The socket of the camera this page shows (``data-socket-path``; v1: ``/ws``). */
export function socketUrl(location = window.location, path = '/ws') {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

/** Whether the session cookie is no longer good: the viewer page redirects to the login. */
export async function sessionGone() {
  try {
    const response = await fetch('/', {
      method: 'GET',
      redirect: 'manual',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'text/html' },
    });
    return response.type === 'opaqueredirect' || response.status === 401;
  } catch {
    return false; // the proxy is unreachable: keep trying to reconnect
  }
}

export class ViewerSocket {
  /**
   * @param {string} url
   * @param {{
   *   message: (msg: object) => void,
   *   frame: (blob: Blob) => void,
   *   state: (state: 'connecting'|'open'|'lost', retryAt?: number) => void,
   *   sessionEnded: () => void,
   *   permissionsChanged?: () => void,
   * }} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.failures = 0;
    this.stopped = false;
    this.timer = 0;
    this.retryAt = 0;
    window.addEventListener('online', () => this.retryNow());
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) this.retryNow();
    });
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** Close for good (logout, leaving the page). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = 0;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'leaving');
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send one JSON command; false if the socket is not open. */
  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  retryNow() {
    if (this.timer && !this.stopped) {
      clearTimeout(this.timer);
      this.timer = 0;
      this.connect();
    }
  }

  connect() {
    this.timer = 0;
    if (this.stopped) return;
    this.handlers.state('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    ws.binaryType = 'blob';
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      this.handlers.state('open');
    });
    ws.addEventListener('message', (event) => {
      if (ws !== this.ws) return;
      if (typeof event.data === 'string') {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message && typeof message === 'object') {
          if (message.type === 'hello') this.failures = 0;
          this.handlers.message(message);
        }
      } else {
        this.handlers.frame(event.data);
      }
    });
    ws.addEventListener('close', (event) => this.closed(ws, event, opened));
    this.ws = ws;
  }

  async closed(ws, event, opened) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (this.stopped) return;
    if (event.code === SESSION_ENDED) {
      this.stopped = true;
      this.handlers.sessionEnded();
      return;
    }
    if (event.code === PERMISSIONS_CHANGED) {
      // Reconnect at once: the new hello carries the new permissions.
      this.failures = 0;
      this.handlers.permissionsChanged?.();
      this.connect();
      return;
    }
    this.failures += 1;
    this.handlers.state('lost');
    if ((!opened || this.failures >= 2) && (await sessionGone())) {
      this.stopped = true;
      this.handlers.sessionEnded();
      return;
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.stopped) return;
    const exponent = Math.max(0, this.failures - 1);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** exponent);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.retryAt = Date.now() + delay;
    this.handlers.state('lost', this.retryAt);
    this.timer = window.setTimeout(() => this.connect(), delay);
  }
}
