/**
 * The viewer page of one camera: live video, status bar and controls over the proxy's
 * /cam/NAME/ws socket (message formats: CONTRACT §3 and §6).
 *
 * Controls are shown only for what the camera can do, and when they are disabled the
 * page says why: view-only access, the link or the camera being down, or, on a camera
 * in exclusive mode, another user holding it ("alice controls the camera for 25 s
 * more", counted down from the server's ``expires_in``). The holder sees their own
 * hold and a "Release control" button.
 */
import { Controls } from './controls.js';
import { socketUrl, ViewerSocket } from './socket.js';
import { Toasts } from './toast.js';
import { FrameView } from './video.js';

const OVERLAY_DEBOUNCE_MS = 500;
const STALE_AFTER_MS = 3000;
/** CONTRACT §6: a hold ends this long after the holder's last command. */
const HOLD_SECONDS = 30;
/** After the camera comes online, look again at what it can do (an ESP32 says late). */
const CAPABILITY_RECHECK_MS = 1500;
const VIEW_ONLY =
  'View only: you can watch, but your account may not move this camera or switch its ' +
  'light. Ask an admin for control permission.';

const $ = (id) => document.getElementById(id);

const viewer = $('viewer');
const stage = $('stage');
const canvas = /** @type {HTMLCanvasElement} */ ($('video'));
const overlay = $('offline-overlay');
const cameraStatus = $('camera-status');
const snapshotButton = /** @type {HTMLButtonElement} */ ($('snapshot'));
const fullscreenButton = /** @type {HTMLButtonElement} */ ($('fullscreen'));
const holdBox = $('control-hold');
const releaseButton = /** @type {HTMLButtonElement} */ ($('release-control'));
const cameraName = viewer.dataset.cameraName || 'default';

const state = {
  /** @type {'connecting'|'open'|'lost'} */
  link: 'connecting',
  retryAt: 0,
  /** @type {boolean|null} null until the server says */
  camera: null,
  canControl: viewer.dataset.canControl === 'true',
  /** @type {string} who this page is signed in as */
  me: viewer.dataset.user || '',
  isAdmin: viewer.dataset.isAdmin === 'true',
  /** @type {'shared'|'exclusive'} */
  mode: viewer.dataset.controlMode === 'exclusive' ? 'exclusive' : 'shared',
  /** @type {string|null} who holds exclusive control */
  holder: viewer.dataset.holder || null,
  /** @type {number} when the hold ends (Date.now() ms), 0 if unknown */
  holdEndsAt: 0,
  leaving: false,
};

const toasts = new Toasts($('toasts'));
const video = new FrameView(canvas, {
  onFirstFrame: () => {
    snapshotButton.disabled = false;
  },
});
const controls = new Controls({
  send: (message) => socket.send(message),
  refused: (reason) => toasts.show(reason, 'info'),
  toggleFullscreen,
  commanded: () => {
    // Our own commands renew our hold; the server says so at most every 10 s.
    if (state.mode === 'exclusive' && state.holder === state.me) {
      state.holdEndsAt = Date.now() + HOLD_SECONDS * 1000;
      renderControls();
    }
  },
});
controls.setCapabilities({
  pan_tilt: viewer.dataset.panTilt === 'true',
  light: viewer.dataset.light === 'true',
});

const socket = new ViewerSocket(socketUrl(window.location, viewer.dataset.socketPath || '/ws'), {
  state: (link, retryAt = 0) => {
    // Attempts after a loss still count as "lost" until one gets through.
    state.link = link === 'connecting' && state.link === 'lost' ? 'lost' : link;
    state.retryAt = retryAt;
    if (state.link === 'lost') state.camera = null; // unknown until the next hello
    render();
  },
  message: onMessage,
  frame: (blob) => video.push(blob),
  sessionEnded: () => leave('/login'),
  permissionsChanged: () => toasts.show('Your permissions changed.', 'info'),
});

function onMessage(message) {
  switch (message.type) {
    case 'hello':
      if (typeof message.can_control === 'boolean') state.canControl = message.can_control;
      if (typeof message.user === 'string') state.me = message.user;
      if (typeof message.is_admin === 'boolean') state.isAdmin = message.is_admin;
      state.mode = message.control === 'exclusive' ? 'exclusive' : 'shared';
      // A hold in force follows as a "control" message; none means nobody holds it.
      state.holder = null;
      state.holdEndsAt = 0;
      controls.setCapabilities(message.capabilities);
      renderCapabilities();
      showCamera(message);
      controls.setLimits(message.limits);
      setCamera(message.esp32_connected === true);
      break;
    case 'camera_status':
      setCamera(message.esp32_connected === true);
      break;
    case 'client_count':
      if (Number.isInteger(message.count)) $('viewer-count').textContent = String(message.count);
      break;
    case 'control':
      setHolder(message.holder, message.expires_in);
      break;
    case 'position_update':
      controls.setPosition(message.x, message.y);
      break;
    case 'light_update':
      controls.setLight(message.state);
      break;
    case 'capabilities':
      // An ESP32 tells whether it has a light only once connected.
      controls.setCapabilities(message.capabilities);
      renderCapabilities();
      break;
    case 'access':
      // A grant changed while watching: control dropped to view, or back.
      state.canControl = message.access === 'control';
      render();
      break;
    case 'error':
      if (typeof message.message === 'string') toasts.show(sentence(message.message), 'error');
      break;
    default:
      break; // newer servers may send more; ignore what we do not know
  }
}

function setHolder(holder, expiresIn) {
  state.holder = typeof holder === 'string' && holder ? holder : null;
  state.holdEndsAt =
    state.holder && Number.isFinite(expiresIn) ? Date.now() + expiresIn * 1000 : 0;
  render();
}

/** The camera's title and kind as ``hello`` gives them (an admin may have changed them). */
function showCamera(message) {
  if (typeof message.title === 'string' && message.title) {
    $('camera-title').textContent = message.title;
    document.title = `${message.title} · Live · CamProxy`;
  }
  if (typeof message.kind === 'string' && message.kind) $('camera-kind').textContent = message.kind;
}

function setCamera(connected) {
  const cameToLife = connected && state.camera !== true;
  state.camera = connected;
  render();
  if (cameToLife) {
    // The proxy sends the position it knows on connect; ask only if none came.
    window.setTimeout(() => {
      if (state.camera && controls.capabilities.pan_tilt && !controls.position) {
        socket.send({ type: 'get_position' });
      }
    }, 1000);
    window.setTimeout(recheckCapabilities, CAPABILITY_RECHECK_MS);
  }
}

/**
 * Some cameras say what they can do only once their link is up (an ESP32's light comes
 * from its /status); the socket has no message for that, the camera list has it.
 */
async function recheckCapabilities() {
  // Only a camera that said it can do less than everything may have more to say.
  const { pan_tilt: panTilt, light } = controls.capabilities;
  if (!state.camera || state.leaving || state.link !== 'open' || (panTilt && light)) return;
  try {
    const response = await fetch('/api/cameras', {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) return;
    const listed = await response.json();
    const mine = Array.isArray(listed) ? listed.find((c) => c && c.name === cameraName) : null;
    if (mine && mine.capabilities) {
      controls.setCapabilities(mine.capabilities);
      renderCapabilities();
      render();
    }
  } catch {
    // Not important enough to report: the next hello says it again.
  }
}

function renderCapabilities() {
  const { pan_tilt: panTilt, light } = controls.capabilities;
  let note;
  if (panTilt && light) note = 'This camera can pan, tilt and switch its light.';
  else if (panTilt) note = 'This camera can pan and tilt; it has no light.';
  else if (light) note = 'This camera has a light; it cannot pan or tilt.';
  else note = 'This camera only sends video: it cannot pan, tilt or switch a light.';
  $('capability-note').textContent = note;
  $('key-hint-move').hidden = !panTilt;
  $('key-hint-light').hidden = !light;
}

function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// -- what the page shows ---------------------------------------------------------

function render() {
  viewer.dataset.link = state.link;
  viewer.dataset.camera = state.camera === null ? 'unknown' : state.camera ? 'online' : 'offline';
  renderCameraStatus();
  renderControls();
  renderOverlay();
}

function renderCameraStatus() {
  let text;
  let kind;
  if (state.link === 'open' && state.camera !== null) {
    text = state.camera ? 'Camera online' : 'Camera offline';
    kind = state.camera ? 'online' : 'offline';
  } else if (state.link === 'lost') {
    text = 'Disconnected';
    kind = 'lost';
  } else {
    text = 'Connecting…';
    kind = 'connecting';
  }
  cameraStatus.textContent = text;
  cameraStatus.dataset.state = kind;
}

function holdCountdown() {
  if (!state.holdEndsAt) return '';
  const seconds = Math.ceil((state.holdEndsAt - Date.now()) / 1000);
  return seconds > 0 ? ` for ${seconds} s more` : ' for a moment more';
}

function renderControls() {
  const heldByOther =
    state.mode === 'exclusive' && state.holder !== null && state.holder !== state.me;
  if (!controls.any) {
    controls.setEnabled(false); // nothing to control: no reason to give
  } else if (!state.canControl) {
    controls.setEnabled(false, VIEW_ONLY);
  } else if (state.link !== 'open' || state.camera === null) {
    controls.setEnabled(
      false,
      state.link === 'lost' ? 'Not connected to the proxy.' : 'Connecting to the camera…',
    );
  } else if (!state.camera) {
    controls.setEnabled(false, 'The camera is offline; controls return when it reconnects.');
  } else if (heldByOther && !state.isAdmin) {
    controls.setEnabled(false, `${state.holder} controls the camera`, `${holdCountdown()}.`);
  } else {
    controls.setEnabled(true);
  }
  renderHold(heldByOther);
}

/** The line about exclusive control for those who may take it, and the release button. */
function renderHold(heldByOther) {
  let text = '';
  let countdown = '';
  const mine = state.mode === 'exclusive' && state.holder !== null && !heldByOther;
  if (controls.enabled && state.mode === 'exclusive') {
    if (mine) {
      text = 'You control the camera';
      countdown = `${holdCountdown()}; others wait until you release it or stop.`;
    } else if (heldByOther) {
      text = `${state.holder} controls the camera`;
      countdown = `${holdCountdown()}; as an admin, your next command takes control over.`;
    } else {
      text = 'Exclusive control';
      countdown = `: your first command reserves the camera for you for ${HOLD_SECONDS} s.`;
    }
  }
  const textElement = $('control-hold-text');
  const countdownElement = $('control-hold-countdown');
  if (textElement.textContent !== text) textElement.textContent = text;
  if (countdownElement.textContent !== countdown) countdownElement.textContent = countdown;
  holdBox.hidden = !text;
  holdBox.dataset.holder = state.holder ?? '';
  releaseButton.hidden = !(mine && controls.enabled);
}

function releaseControl() {
  if (socket.send({ type: 'release_control' })) releaseButton.disabled = true;
  // The server answers everyone with {"type": "control", "holder": null}.
  window.setTimeout(() => {
    releaseButton.disabled = false;
  }, 1000);
}

/** @returns {{reason: string, title: string, detail: string} | null} */
function wantedOverlay() {
  if (state.link === 'lost') {
    const seconds = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    return {
      reason: 'link',
      title: 'Connection to the proxy lost',
      detail: state.retryAt && seconds > 0 ? `Reconnecting in ${seconds} s…` : 'Reconnecting…',
    };
  }
  if (state.link === 'connecting' || state.camera === null) {
    return { reason: 'connecting', title: 'Connecting…', detail: 'Opening the live stream.' };
  }
  if (state.camera === false) {
    return {
      reason: 'camera',
      title: 'Camera offline',
      detail: 'The proxy keeps trying to reach the camera; the picture returns by itself.',
    };
  }
  return null;
}

let overlayTimer = 0;

function renderOverlay() {
  const wanted = wantedOverlay();
  if (!wanted) {
    clearTimeout(overlayTimer);
    overlayTimer = 0;
    overlay.hidden = true;
    stage.classList.remove('is-offline');
    return;
  }
  if (!overlay.hidden) {
    showOverlay(wanted);
  } else if (!overlayTimer) {
    // A short blip (a camera reconnecting at once) should not flash the overlay.
    overlayTimer = window.setTimeout(() => {
      overlayTimer = 0;
      const still = wantedOverlay();
      if (still) showOverlay(still);
    }, OVERLAY_DEBOUNCE_MS);
  }
}

function showOverlay({ reason, title, detail }) {
  overlay.dataset.reason = reason;
  $('overlay-title').textContent = title;
  $('overlay-detail').textContent = detail;
  overlay.hidden = false;
  stage.classList.add('is-offline');
}

function formatAge(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min`;
}

function tick() {
  $('fps').textContent = video.current ? video.fps().toFixed(1) : '–';
  const age = video.age();
  const ageElement = $('frame-age');
  ageElement.textContent = age === null ? '–' : formatAge(age);
  ageElement.classList.toggle('is-stale', age !== null && age > STALE_AFTER_MS);
  if (state.link === 'lost' && !overlay.hidden) renderOverlay(); // count the retry down
  if (state.holdEndsAt) renderControls(); // count the hold down
}

// -- snapshot and fullscreen --------------------------------------------------------

function timestamp(date = new Date()) {
  const two = (n) => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}` +
    `T${two(date.getHours())}-${two(date.getMinutes())}-${two(date.getSeconds())}`
  );
}

function saveSnapshot() {
  const jpeg = video.snapshot();
  if (!jpeg) {
    toasts.show('No picture yet.', 'info');
    return;
  }
  const url = URL.createObjectURL(jpeg);
  const link = document.createElement('a');
  link.href = url;
  // v1 named snapshots after the RoboCam; other cameras after themselves.
  const prefix = cameraName === 'default' ? 'robocam' : cameraName;
  link.download = `${prefix}-${timestamp()}.jpg`;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has started by now; give slow browsers a moment before revoking.
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}

const fullscreenSupported = Boolean(
  document.fullscreenEnabled ?? document.webkitFullscreenEnabled,
);

function fullscreenElement() {
  return document.fullscreenElement ?? document.webkitFullscreenElement ?? null;
}

function toggleFullscreen() {
  if (!fullscreenSupported) return;
  const done = fullscreenElement()
    ? (document.exitFullscreen ?? document.webkitExitFullscreen).call(document)
    : (stage.requestFullscreen ?? stage.webkitRequestFullscreen).call(stage);
  Promise.resolve(done).catch(() => toasts.show('Fullscreen is not available here.', 'info'));
}

function renderFullscreen() {
  const on = fullscreenElement() !== null;
  const label = on ? 'Exit fullscreen' : 'Fullscreen';
  fullscreenButton.setAttribute('aria-label', label);
  fullscreenButton.title = `${label} (F)`;
  fullscreenButton.classList.toggle('is-on', on);
}

// -- leaving ---------------------------------------------------------------------------

function leave(path) {
  if (state.leaving) return;
  state.leaving = true;
  socket.stop();
  window.location.assign(path);
}

// -- start -------------------------------------------------------------------------------

snapshotButton.addEventListener('click', saveSnapshot);
releaseButton.addEventListener('click', releaseControl);
for (const menu of document.querySelectorAll('.switcher-menu')) {
  // Close the camera menu on a click elsewhere or Escape, as menus do.
  document.addEventListener('click', (event) => {
    if (menu.open && !menu.contains(/** @type {Node} */ (event.target))) menu.open = false;
  });
  menu.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && menu.open) {
      menu.open = false;
      menu.querySelector('summary')?.focus();
    }
  });
}
if (fullscreenSupported) {
  fullscreenButton.addEventListener('click', toggleFullscreen);
  document.addEventListener('fullscreenchange', renderFullscreen);
  document.addEventListener('webkitfullscreenchange', renderFullscreen);
} else {
  fullscreenButton.hidden = true; // e.g. iPhone Safari has no element fullscreen
}
$('logout-form').addEventListener('submit', () => {
  state.leaving = true;
  socket.stop();
});
window.addEventListener('pagehide', () => socket.stop());
window.addEventListener('pageshow', (event) => {
  if (event.persisted && !state.leaving) socket.start(); // back from the bfcache
});

render();
socket.start();
window.setInterval(tick, 250);
