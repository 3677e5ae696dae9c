/** Reads a JWT's `exp` (seconds since the epoch), or undefined. */
export function tokenExp(token: string | undefined): number | undefined {
  const part = token?.split('.')[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How long after `now` (ms) to renew a token expiring at `exp` (s): when a
 * quarter of the time left has passed, but at most 60 s before expiry.
 * 0 when it is due already; undefined when the token has no `exp`.
 */
export function renewDelay(exp: number | undefined, now: number): number | undefined {
  if (exp === undefined) return undefined;
  const left = exp * 1000 - now;
  if (left <= 0) return 0;
  return Math.max(0, left - Math.min(60_000, left / 4));
}

/** Whether a token is missing or expires within 5 s of `now`: not worth connecting with. */
export function tokenStale(token: string | undefined, now: number): boolean {
  const exp = tokenExp(token);
  return !token || (exp !== undefined && exp * 1000 - now < 5000);
}
