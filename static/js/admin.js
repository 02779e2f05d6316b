/**
 * The users page: show the server's epoch timestamps as local date and time.
 * Everything else on the page works without JavaScript.
 */
const format = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

for (const element of document.querySelectorAll('time[data-epoch]')) {
  const seconds = Number(element.dataset.epoch);
  if (!Number.isFinite(seconds)) continue;
  const date = new Date(seconds * 1000);
  element.dateTime = date.toISOString();
  element.textContent = format.format(date);
  element.title = date.toISOString();
}
