/**
 * Camera controls: the d-pad (mouse, touch, keyboard), pan/tilt sliders and the light.
 *
 * Only what the camera can do is shown (``setCapabilities``: no d-pad or sliders without
 * pan/tilt, no light button without a light), and keys for the rest do nothing.
 *
 * Sliders follow the position any viewer causes, except while this user drags one, and
 * for a moment after this user set a position: the firmware first echoes the position
 * from before the move, then the proxy asks where it went, and the thumb should not
 * jump back and forth in between.
 */

const REPEAT_DELAY_MS = 450;
const REPEAT_EVERY_MS = 250;
const KEY_REPEAT_MS = 200;
const FOLLOW_PAUSE_MS = 1500;

const KEY_COMMANDS = new Map([
  ['ArrowUp', 'up'],
  ['ArrowDown', 'down'],
  ['ArrowLeft', 'left'],
  ['ArrowRight', 'right'],
  ['Home', 'center'],
  ['c', 'center'],
  ['C', 'center'],
]);

function typingInto(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  return tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT';
}

export class Controls {
  /**
   * @param {{
   *   send: (message: object) => boolean,
   *   refused: (reason: string) => void,
   *   toggleFullscreen: () => void,
   *   commanded?: () => void,
   * }} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.enabled = false;
    this.reason = 'Connecting to the camera…';
    this.light = false;
    this.capabilities = { pan_tilt: true, light: true };
    this.buttons = [...document.querySelectorAll('.dpad-btn')];
    this.pan = /** @type {HTMLInputElement} */ (document.getElementById('pan-slider'));
    this.tilt = /** @type {HTMLInputElement} */ (document.getElementById('tilt-slider'));
    this.lightButton = document.getElementById('light-toggle');
    this.lightState = document.getElementById('light-state');
    this.reasonElement = document.getElementById('control-reason');
    this.reasonText = document.getElementById('control-reason-text');
    this.reasonCountdown = document.getElementById('control-countdown');
    this.panTilt = document.getElementById('pan-tilt');
    this.posX = document.getElementById('pos-x');
    this.posY = document.getElementById('pos-y');
    /** @type {{x: number, y: number} | null} */
    this.position = null;
    this.dragging = false;
    this.followPausedUntil = 0;
    this.followTimer = 0;
    this.repeatTimer = 0;
    this.lastKeyAt = 0;

    for (const button of this.buttons) this.wireButton(button);
    for (const slider of [this.pan, this.tilt]) this.wireSlider(slider);
    this.lightButton.addEventListener('click', () => {
      if (this.enabled) this.command({ type: 'light_command', state: !this.light });
    });
    document.addEventListener('keydown', (event) => this.onKey(event));
    window.addEventListener('blur', () => this.stopRepeat());
  }

  // -- d-pad ------------------------------------------------------------------

  wireButton(button) {
    const command = button.dataset.command;
    button.addEventListener('pointerdown', (event) => {
      if (!event.isPrimary || event.button !== 0 || !this.enabled) return;
      event.preventDefault(); // no focus steal, text selection or touch emulation
      button.setPointerCapture?.(event.pointerId);
      button.classList.add('is-pressed');
      this.servo(command);
      this.stopRepeat();
      if (command !== 'center') {
        this.repeatTimer = window.setTimeout(() => {
          this.repeatTimer = window.setInterval(() => this.servo(command), REPEAT_EVERY_MS);
        }, REPEAT_DELAY_MS);
      }
    });
    const release = () => {
      button.classList.remove('is-pressed');
      this.stopRepeat();
    };
    button.addEventListener('pointerup', release);
    button.addEventListener('pointercancel', release);
    button.addEventListener('lostpointercapture', release);
    // Keyboard activation (Enter/Space) arrives as a click without a pointer.
    button.addEventListener('click', (event) => {
      if (event.detail === 0) this.servo(command);
    });
    button.addEventListener('contextmenu', (event) => event.preventDefault());
  }

  stopRepeat() {
    // One id space for timeouts and intervals, so either clear works on both.
    clearTimeout(this.repeatTimer);
    clearInterval(this.repeatTimer);
    this.repeatTimer = 0;
  }

  servo(command) {
    if (!this.capabilities.pan_tilt) return;
    if (!this.enabled) {
      this.hooks.refused(this.reason);
      return;
    }
    this.command({ type: 'servo_command', command });
  }

  /** Send a command that needs control; tell the page it went out. */
  command(message) {
    if (this.hooks.send(message)) this.hooks.commanded?.();
  }

  onKey(event) {
    if (event.ctrlKey || event.altKey || event.metaKey || typingInto(event.target)) return;
    if (event.key === 'f' || event.key === 'F') {
      if (!event.repeat) this.hooks.toggleFullscreen();
      return;
    }
    if (event.key === 'l' || event.key === 'L') {
      if (!event.repeat && this.capabilities.light) this.lightButton.click();
      return;
    }
    const command = KEY_COMMANDS.get(event.key);
    if (!command || !this.capabilities.pan_tilt) return;
    event.preventDefault(); // arrows would scroll the page
    const now = performance.now();
    if (event.repeat && (command === 'center' || now - this.lastKeyAt < KEY_REPEAT_MS)) return;
    this.lastKeyAt = now;
    const button = document.getElementById(`btn-${command}`);
    if (button) {
      button.classList.add('is-pressed');
      window.setTimeout(() => button.classList.remove('is-pressed'), 150);
    }
    this.servo(command);
  }

  // -- sliders -------------------------------------------------------------------

  wireSlider(slider) {
    slider.addEventListener('pointerdown', () => {
      this.dragging = true;
    });
    const release = () => {
      if (!this.dragging) return;
      this.dragging = false;
      this.scheduleFollow();
    };
    window.addEventListener('pointerup', release);
    window.addEventListener('pointercancel', release);
    slider.addEventListener('change', () => {
      this.dragging = false;
      this.sendPosition();
    });
  }

  sendPosition() {
    if (!this.enabled) return;
    const x = Math.round(Number(this.pan.value));
    const y = Math.round(Number(this.tilt.value));
    this.followPausedUntil = performance.now() + FOLLOW_PAUSE_MS;
    this.scheduleFollow();
    this.command({ type: 'position_command', x, y });
  }

  /** Bring the sliders to the camera's position once the user is not using them. */
  scheduleFollow() {
    clearTimeout(this.followTimer);
    const wait = this.followPausedUntil - performance.now();
    if (wait > 0) {
      this.followTimer = window.setTimeout(() => this.scheduleFollow(), wait);
      return;
    }
    if (!this.dragging && this.position) {
      this.pan.value = String(this.position.x);
      this.tilt.value = String(this.position.y);
    }
  }

  setLimits(limits) {
    if (!limits) return;
    const { min_x: minX, max_x: maxX, min_y: minY, max_y: maxY } = limits;
    if ([minX, maxX, minY, maxY].every(Number.isInteger)) {
      this.pan.min = String(minX);
      this.pan.max = String(maxX);
      this.tilt.min = String(minY);
      this.tilt.max = String(maxY);
      this.scheduleFollow();
    }
  }

  setPosition(x, y) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    this.position = { x, y };
    this.posX.textContent = String(x);
    this.posY.textContent = String(y);
    this.scheduleFollow();
  }

  // -- light and permission --------------------------------------------------------

  setLight(state) {
    this.light = state === true;
    this.lightButton.setAttribute('aria-pressed', String(this.light));
    this.lightState.textContent = this.light ? 'on' : 'off';
  }

  /**
   * Show only the controls this camera has: ``{pan_tilt, light}`` as ``hello`` says.
   * @param {{pan_tilt?: boolean, light?: boolean} | undefined} capabilities
   */
  setCapabilities(capabilities) {
    if (!capabilities || typeof capabilities !== 'object') return;
    this.capabilities = {
      pan_tilt: capabilities.pan_tilt === true,
      light: capabilities.light === true,
    };
    this.panTilt.hidden = !this.capabilities.pan_tilt;
    this.lightButton.hidden = !this.capabilities.light;
    if (!this.capabilities.pan_tilt) this.stopRepeat();
  }

  /** Whether this camera has any control at all. */
  get any() {
    return this.capabilities.pan_tilt || this.capabilities.light;
  }

  /**
   * Enable the controls, or disable them and say why (``countdown``: a part of the
   * reason that changes every second, kept out of the live region so that screen
   * readers hear the reason once, not every tick).
   */
  setEnabled(enabled, reason = '', countdown = '') {
    this.enabled = enabled;
    this.reason = reason + countdown;
    if (!enabled) this.stopRepeat();
    for (const element of [...this.buttons, this.pan, this.tilt, this.lightButton]) {
      element.disabled = !enabled;
    }
    if (this.reasonText.textContent !== reason) this.reasonText.textContent = reason;
    if (this.reasonCountdown.textContent !== countdown) {
      this.reasonCountdown.textContent = countdown;
    }
    this.reasonElement.hidden = enabled || !reason;
  }
}
