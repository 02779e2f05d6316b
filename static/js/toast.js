/**
 * Short-lived messages in an aria-live region. Repeats of the message on screen
 * are merged (with a count) instead of stacking up.
 */
export class Toasts {
  /** @param {HTMLElement} region an element with aria-live */
  constructor(region, { lifetime = 4500, limit = 4 } = {}) {
    this.region = region;
    this.lifetime = lifetime;
    this.limit = limit;
    /** @type {Map<string, {element: HTMLElement, count: number, timer: number}>} */
    this.shown = new Map();
  }

  /**
   * @param {string} text
   * @param {'error'|'info'} kind
   */
  show(text, kind = 'info') {
    const key = `${kind}:${text}`;
    const existing = this.shown.get(key);
    if (existing) {
      existing.count += 1;
      existing.element.dataset.count = String(existing.count);
      existing.element.querySelector('.toast-count').textContent = `×${existing.count}`;
      clearTimeout(existing.timer);
      existing.timer = window.setTimeout(() => this.dismiss(key), this.lifetime);
      return;
    }
    while (this.shown.size >= this.limit) {
      this.dismiss(this.shown.keys().next().value);
    }
    const element = document.createElement('div');
    element.className = `toast toast-${kind}`;
    const message = document.createElement('span');
    message.className = 'toast-text';
    message.textContent = text;
    const count = document.createElement('span');
    count.className = 'toast-count';
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss message');
    close.textContent = '×';
    close.addEventListener('click', () => this.dismiss(key));
    element.append(message, count, close);
    this.region.append(element);
    const timer = window.setTimeout(() => this.dismiss(key), this.lifetime);
    this.shown.set(key, { element, count: 1, timer });
  }

  dismiss(key) {
    const entry = this.shown.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.element.remove();
    this.shown.delete(key);
  }
}
