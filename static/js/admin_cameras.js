/**
 * The admin's camera pages. Everything works without JavaScript; with it,
 * "Test connection" answers in place (the form keeps what was typed, password included,
 * which a page sent back by the server never shows), and the list's status and viewer
 * counts stay current.
 */
const REFRESH_MS = 5000;

async function testConnection(button) {
  const form = button.form;
  const result = form.querySelector('#probe-result');
  const data = new URLSearchParams(new FormData(form));
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  const label = button.textContent;
  button.textContent = 'Testing…';
  result.hidden = false;
  result.className = 'alert probe-result alert-info';
  result.textContent = 'Connecting to the camera, as the daemon would…';
  try {
    const response = await fetch('/admin/probe', {
      method: 'POST',
      body: data,
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) {
      throw new Error(
        response.status === 403 ? 'The form expired; reload the page.' : `HTTP ${response.status}`,
      );
    }
    const answer = await response.json();
    result.className = `alert probe-result ${answer.ok ? 'alert-ok' : 'alert-error'}`;
    result.textContent = answer.ok ? answer.summary : answer.error;
  } catch (problem) {
    result.className = 'alert probe-result alert-error';
    result.textContent = `The test did not run: ${problem.message || problem}`;
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = label;
  }
}

for (const button of document.querySelectorAll('button[data-probe]')) {
  button.addEventListener('click', (event) => {
    event.preventDefault();
    testConnection(/** @type {HTMLButtonElement} */ (button));
  });
}

/** The list's status words, from what /api/cameras says (it does not say whether the
 * daemon wants a link it does not have, so a status the server wrote stays unless the
 * link went up or down). */
function statusOf(camera, before) {
  if (camera.esp32_connected) return 'online';
  if (before === 'online' || before === 'starting') return camera.clients > 0 ? 'offline' : 'idle';
  return before;
}

/** Keep the list's status and viewer counts current (admins may view every camera). */
async function refresh() {
  if (document.hidden) return;
  let listed;
  try {
    const response = await fetch('/api/cameras', {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) return;
    listed = await response.json();
  } catch {
    return;
  }
  if (!Array.isArray(listed)) return;
  for (const camera of listed) {
    const row = document.querySelector(`[data-camera="${CSS.escape(String(camera.name))}"]`);
    if (!row) continue;
    const status = row.querySelector('.camera-status');
    const viewers = row.querySelector('.camera-viewers');
    if (status) {
      const now = statusOf(camera, status.dataset.state);
      status.dataset.state = now;
      status.textContent = now;
    }
    if (viewers && Number.isInteger(camera.clients)) viewers.textContent = String(camera.clients);
  }
}

if (document.getElementById('cameras-table')) window.setInterval(refresh, REFRESH_MS);
