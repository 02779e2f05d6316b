/**
 * Draws JPEG frames onto a canvas.
 *
 * At most one frame is being decoded at any time; frames that arrive meanwhile replace
 * each other, so only the newest waits. A slow device therefore skips frames and shows
 * the newest picture instead of falling further and further behind. Decoded bitmaps are
 * closed (and object URLs revoked, on the fallback path) as soon as they are drawn.
 */

const FPS_WINDOW_MS = 2000;

export class FrameView {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas, { onFirstFrame = () => {} } = {}) {
    this.canvas = canvas;
    this.context = canvas.getContext('2d', { alpha: false });
    this.onFirstFrame = onFirstFrame;
    /** @type {{blob: Blob, at: number} | null} */
    this.pending = null;
    this.decoding = false;
    this.frames = 0;
    this.skipped = 0;
    this.failed = 0;
    /** @type {number[]} times (ms) at which frames were drawn, newest last */
    this.drawTimes = [];
    /** @type {{blob: Blob, at: number} | null} the frame on screen */
    this.current = null;
    this.useBitmap = typeof window.createImageBitmap === 'function';
    document.addEventListener('visibilitychange', () => this.pump());
  }

  /** A frame arrived from the socket. */
  push(blob) {
    if (this.pending) this.skipped += 1;
    this.pending = { blob, at: performance.now() };
    this.pump();
  }

  async pump() {
    // A hidden page keeps only the newest frame and decodes it once it is shown again.
    if (this.decoding || document.hidden) return;
    this.decoding = true;
    try {
      while (this.pending) {
        const frame = this.pending;
        this.pending = null;
        try {
          await this.draw(frame.blob);
        } catch {
          this.failed += 1; // a frame the browser cannot decode: wait for the next one
          continue;
        }
        this.drawn(frame);
      }
    } finally {
      this.decoding = false;
    }
  }

  async draw(blob) {
    if (this.useBitmap) {
      const bitmap = await createImageBitmap(blob);
      try {
        this.paint(bitmap, bitmap.width, bitmap.height);
      } finally {
        bitmap.close();
      }
      return;
    }
    const url = URL.createObjectURL(blob);
    try {
      const image = new Image();
      image.src = url;
      await image.decode();
      this.paint(image, image.naturalWidth, image.naturalHeight);
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  paint(source, width, height) {
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.drawImage(source, 0, 0);
  }

  drawn(frame) {
    const first = this.current === null;
    this.current = frame;
    this.frames += 1;
    this.canvas.dataset.frames = String(this.frames);
    const now = performance.now();
    this.drawTimes.push(now);
    while (this.drawTimes.length && now - this.drawTimes[0] > FPS_WINDOW_MS) {
      this.drawTimes.shift();
    }
    if (first) this.onFirstFrame();
  }

  /** Frames drawn per second over the last two seconds. */
  fps() {
    const now = performance.now();
    const times = this.drawTimes.filter((t) => now - t <= FPS_WINDOW_MS);
    if (times.length < 2) return 0;
    const span = Math.max(now - times[0], 1);
    return ((times.length - 1) * 1000) / span;
  }

  /** Milliseconds since the frame on screen arrived, or null before the first. */
  age() {
    return this.current ? performance.now() - this.current.at : null;
  }

  /** The JPEG on screen, as a Blob of type image/jpeg, or null. */
  snapshot() {
    if (!this.current) return null;
    return new Blob([this.current.blob], { type: 'image/jpeg' });
  }
}
