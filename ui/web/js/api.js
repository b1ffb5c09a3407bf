// The one door to the server: every call carries the session's bearer token, like any script's.
// Only endpoints of openapi/webpacs.yaml are used (DESIGN §3, rule 6).

const SESSION_KEY = 'webpacs.session';

/** An HTTP error with the server's explanation (RFC 9457 problem detail, when it sent one). */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** The stored session: {access_token, refresh_token?, expires_at?, via: 'login'|'token'}. */
export function session() {
  try {
    return JSON.parse(window.localStorage.getItem(SESSION_KEY) || 'null');
  } catch (error) {
    return null;
  }
}

function save(value) {
  if (value) window.localStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else window.localStorage.removeItem(SESSION_KEY);
}

function fromTokenResponse(body) {
  return {
    access_token: body.access_token,
    refresh_token: body.refresh_token || null,
    expires_at: body.expires_in ? Date.now() + body.expires_in * 1000 : null,
    via: 'login',
  };
}

/** Sign in with a user name and password (POST /api/auth/login). */
export async function login(username, password) {
  const body = await request('/api/auth/login', { method: 'POST', json: { username, password }, anonymous: true });
  save(fromTokenResponse(body));
}

/** Use an API token (from `webpacs token create` or the admin page) as this browser's session. */
export async function useApiToken(token) {
  save({ access_token: token.trim(), refresh_token: null, expires_at: null, via: 'token' });
  try {
    return await me();
  } catch (error) {
    save(null);
    throw error;
  }
}

/** End the session: the server revokes its refresh token, this browser forgets both. */
export async function logout() {
  const current = session();
  save(null);
  if (current && current.refresh_token) {
    try {
      await request('/api/auth/logout', {
        method: 'POST',
        json: { refresh_token: current.refresh_token },
        headers: { Authorization: `Bearer ${current.access_token}` },
        anonymous: true,
      });
    } catch (error) {
      // The session is forgotten here either way; its access token expires on its own.
    }
  }
}

/** Who the session's token belongs to: name, role, permissions, kind (GET /api/me). */
export async function me() {
  return request('/api/me');
}

let refreshing = null;

async function refresh() {
  const current = session();
  if (!current || !current.refresh_token) return false;
  refreshing =
    refreshing ||
    request('/api/auth/refresh', { method: 'POST', json: { refresh_token: current.refresh_token }, anonymous: true })
      .then(body => {
        save(fromTokenResponse(body));
        return true;
      })
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  return refreshing;
}

/** The Authorization header of the session, refreshing an access token about to expire. */
export async function authorization() {
  let current = session();
  if (current && current.refresh_token && current.expires_at && current.expires_at - Date.now() < 30_000) {
    await refresh();
    current = session();
  }
  return current ? { Authorization: `Bearer ${current.access_token}` } : {};
}

async function problemDetail(response) {
  const type = response.headers.get('content-type') || '';
  try {
    if (type.includes('json')) {
      const body = await response.json();
      return body.detail || body.title || JSON.stringify(body);
    }
    return (await response.text()).slice(0, 500);
  } catch (error) {
    return response.statusText;
  }
}

/**
 * Call the API. Options: method, json (a body sent as JSON), body, headers, raw (return the
 * Response), anonymous (send no token). A 401 tries one token refresh, then throws.
 */
export async function request(path, options = {}) {
  const { method = 'GET', json, body, headers = {}, raw = false, anonymous = false, retried = false } = options;
  const sent = { ...(anonymous ? {} : await authorization()), ...headers };
  let payload = body;
  if (json !== undefined) {
    sent['Content-Type'] = 'application/json';
    payload = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: sent, body: payload });
  if (response.status === 401 && !anonymous && !retried && (await refresh())) {
    return request(path, { ...options, retried: true });
  }
  if (!response.ok) {
    throw new ApiError(response.status, await problemDetail(response));
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/** QIDO-RS search (DICOM JSON); `params` is a list of [name, value] pairs. */
export async function qido(path, params) {
  const query = new URLSearchParams(params).toString();
  return request(`/dicomweb${path}${query ? `?${query}` : ''}`, { headers: { Accept: 'application/dicom+json' } });
}
