/**
 * The viewer page: live video, status bar and controls over the proxy's /ws socket
 * (message formats: CONTRACT §3).
 */
import { Controls } from './controls.js';
import { socketUrl, ViewerSocket } from './socket.js';
import { Toasts } from './toast.js';
import { FrameView } from './video.js';

const OVERLAY_DEBOUNCE_MS = 500;
const STALE_AFTER_MS = 3000;

const $ = (id) => document.getElementById(id);

const viewer = $('viewer');
const stage = $('stage');
const canvas = /** @type {HTMLCanvasElement} */ ($('video'));
const overlay = $('offline-overlay');
const cameraStatus = $('camera-status');
const snapshotButton = /** @type {HTMLButtonElement} */ ($('snapshot'));
const fullscreenButton = /** @type {HTMLButtonElement} */ ($('fullscreen'));

const state = {
  /** @type {'connecting'|'open'|'lost'} */
  link: 'connecting',
  retryAt: 0,
  /** @type {boolean|null} null until the server says */
  camera: null,
  canControl: viewer.dataset.canControl === 'true',
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
      controls.setLimits(message.limits);
      setCamera(message.esp32_connected === true);
      break;
    case 'camera_status':
      setCamera(message.esp32_connected === true);
      break;
    case 'client_count':
      if (Number.isInteger(message.count)) $('viewer-count').textContent = String(message.count);
      break;
    case 'position_update':
      controls.setPosition(message.x, message.y);
      break;
    case 'light_update':
      controls.setLight(message.state);
      break;
    case 'error':
      if (typeof message.message === 'string') toasts.show(sentence(message.message), 'error');
      break;
    default:
      break; // newer servers may send more; ignore what we do not know
  }
}

function setCamera(connected) {
  const cameToLife = connected && state.camera !== true;
  state.camera = connected;
  render();
  if (cameToLife) {
    // The proxy sends the position it knows on connect; ask only if none came.
    window.setTimeout(() => {
      if (state.camera && !controls.position) socket.send({ type: 'get_position' });
    }, 1000);
  }
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

function renderControls() {
  if (!state.canControl) {
    controls.setEnabled(
      false,
      'You can watch, but your account may not move the camera or switch its light. ' +
        'Ask an admin for control permission.',
    );
  } else if (state.link !== 'open' || state.camera === null) {
    controls.setEnabled(
      false,
      state.link === 'lost' ? 'Not connected to the proxy.' : 'Connecting to the camera…',
    );
  } else if (!state.camera) {
    controls.setEnabled(false, 'The camera is offline; controls return when it reconnects.');
  } else {
    controls.setEnabled(true);
  }
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
  link.download = `robocam-${timestamp()}.jpg`;
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
