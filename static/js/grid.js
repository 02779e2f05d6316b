/**
 * The camera grid ("/" for a user who may view more than one camera): one live tile per
 * camera, each one more viewer of its camera through /cam/NAME/ws?fps=2 (the proxy's
 * shared link; never a second link to a camera). Status, viewer count and who holds
 * exclusive control follow the sockets' events.
 *
 * A tile off screen (or the whole page hidden) asks for no frames: it sends
 * {"type":"set_fps","fps":0}, and 2 again once it is visible. Keeping the socket open,
 * rather than closing and reopening it, keeps the tile's status and viewer count live
 * while it is scrolled away, costs no handshake (session lookup, admission) per scroll,
 * does not make every other viewer of that camera see the count flap up and down, and
 * the picture comes back at once. The tile still counts as a viewer, truthfully: the page
 * is open on that camera.
 */
import { socketUrl, ViewerSocket } from './socket.js';
import { FrameView } from './video.js';

const TILE_FPS = 2;

class Tile {
  /** @param {HTMLElement} element */
  constructor(element, grid) {
    this.element = element;
    this.grid = grid;
    this.name = element.dataset.camera;
    this.canvas = /** @type {HTMLCanvasElement} */ (element.querySelector('.tile-video'));
    this.overlay = element.querySelector('.tile-overlay');
    this.status = element.querySelector('.tile-status');
    this.count = element.querySelector('.tile-count');
    this.holder = element.querySelector('.tile-holder');
    this.kind = element.querySelector('.tile-kind');
    this.video = new FrameView(this.canvas);
    this.received = 0;
    /** @type {'connecting'|'open'|'lost'} */
    this.link = 'connecting';
    /** @type {boolean|null} null until the server says */
    this.camera = null;
    this.onScreen = false;
    /** @type {number|null} the frame rate this socket was last asked for */
    this.asked = null;
    this.socket = new ViewerSocket(socketUrl(window.location, element.dataset.socketPath), {
      state: (link) => {
        this.link = link === 'connecting' && this.link === 'lost' ? 'lost' : link;
        if (this.link !== 'open') {
          this.camera = null;
          this.asked = null;
        }
        this.render();
      },
      message: (message) => this.onMessage(message),
      frame: (blob) => this.onFrame(blob),
      sessionEnded: () => grid.leave('/login'),
      permissionsChanged: () => {},
    });
  }

  get wanted() {
    return this.onScreen && !document.hidden ? TILE_FPS : 0;
  }

  /** Ask for frames while visible, none while not (the socket starts at ?fps=2). */
  pace() {
    if (this.link !== 'open' || this.camera === null) return;
    const fps = this.wanted;
    if (fps === this.asked) return;
    if (this.socket.send({ type: 'set_fps', fps })) this.asked = fps;
    this.element.dataset.fps = String(fps);
  }

  onMessage(message) {
    switch (message.type) {
      case 'hello':
        this.asked = TILE_FPS; // what ?fps= asked for
        this.element.dataset.fps = String(TILE_FPS);
        if (typeof message.kind === 'string' && message.kind) this.kind.textContent = message.kind;
        this.setHolder(null);
        this.camera = message.esp32_connected === true;
        this.render();
        this.pace();
        break;
      case 'camera_status':
        this.camera = message.esp32_connected === true;
        this.render();
        break;
      case 'client_count':
        if (Number.isInteger(message.count)) this.count.textContent = String(message.count);
        break;
      case 'control':
        this.setHolder(typeof message.holder === 'string' ? message.holder : null);
        break;
      default:
        break;
    }
  }

  onFrame(blob) {
    this.received += 1;
    this.canvas.dataset.received = String(this.received);
    // A frame already on its way when the tile scrolled away is dropped, not decoded.
    if (this.wanted) this.video.push(blob);
  }

  setHolder(holder) {
    this.holder.textContent = holder ? `${holder} controls it` : '';
    this.holder.hidden = !holder;
  }

  render() {
    let state;
    let text;
    if (this.link === 'lost') {
      state = 'lost';
      text = 'Disconnected';
    } else if (this.link !== 'open' || this.camera === null) {
      state = 'connecting';
      text = 'Connecting…';
    } else {
      state = this.camera ? 'online' : 'offline';
      text = this.camera ? 'online' : 'offline';
    }
    this.element.dataset.state = state;
    this.status.dataset.state = state;
    this.status.textContent = text;
    const overlay =
      state === 'online'
        ? ''
        : state === 'offline'
          ? 'Camera offline'
          : state === 'lost'
            ? 'Reconnecting…'
            : 'Connecting…';
    this.overlay.textContent = overlay;
    // Before the first picture a connecting tile says so; afterwards it keeps the last one.
    this.overlay.hidden = !overlay || (state === 'connecting' && this.video.current !== null);
    this.element.classList.toggle('is-offline', state === 'offline' || state === 'lost');
  }
}

class Grid {
  constructor(elements) {
    this.leaving = false;
    this.tiles = elements.map((element) => new Tile(element, this));
    const byElement = new Map(this.tiles.map((tile) => [tile.element, tile]));
    this.observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const tile = byElement.get(/** @type {HTMLElement} */ (entry.target));
          if (!tile) continue;
          tile.onScreen = entry.isIntersecting;
          tile.pace();
        }
      },
      { threshold: 0 },
    );
    for (const tile of this.tiles) this.observer.observe(tile.element);
    document.addEventListener('visibilitychange', () => {
      for (const tile of this.tiles) tile.pace();
    });
    window.addEventListener('pagehide', () => this.stop());
    window.addEventListener('pageshow', (event) => {
      if (event.persisted && !this.leaving) this.start(); // back from the bfcache
    });
    document.getElementById('logout-form')?.addEventListener('submit', () => {
      this.leaving = true;
      this.stop();
    });
  }

  start() {
    for (const tile of this.tiles) {
      tile.render();
      tile.socket.start();
    }
  }

  stop() {
    for (const tile of this.tiles) tile.socket.stop();
  }

  leave(path) {
    if (this.leaving) return;
    this.leaving = true;
    this.stop();
    window.location.assign(path);
  }
}

const tiles = [...document.querySelectorAll('.camera-tile')];
if (tiles.length) new Grid(/** @type {HTMLElement[]} */ (tiles)).start();
