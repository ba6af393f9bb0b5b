// What every page shares: the API call with the session cookie, and signing in (a token
// posted once to /ui/session, which answers with an HttpOnly cookie; never in a URL).

export const $ = (sel) => document.querySelector(sel);

export async function api(path) {
  const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (r.status === 401) throw Object.assign(new Error('sign in'), { status: 401 });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

export function showLogin(message) {
  $('#login').hidden = false;
  $('#login-message').textContent = message || '';
  $('#token').focus();
}

/// Wires the sign-in form: on success the page starts (again) with `start`.
export function onSignIn(start) {
  $('#login').addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = $('#token').value.trim();
    const r = await fetch('/ui/session', { method: 'POST', credentials: 'same-origin', headers: { Authorization: `Bearer ${token}` } });
    $('#token').value = '';
    if (!r.ok) return showLogin('That token was not accepted.');
    $('#login').hidden = true;
    start();
  });
}

/// `42s`, `3m 5s`: a duration in milliseconds for people ('' if unknown).
export function duration(ms) {
  if (ms === undefined || ms === null) return '';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${s % 60}s`;
}

/// A table cell with text.
export function cell(row, text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text;
  row.append(td);
  return td;
}
