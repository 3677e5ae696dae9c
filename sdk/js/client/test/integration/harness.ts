// Real processes for the integration tests: the updraft binary built from
// this checkout, redis-server, `updraft serve` gateways on free loopback
// ports, and a TCP proxy that can cut connections. Everything started here
// is stopped by PID in stopAll(); a process that cannot start fails the
// test with its log, never skips it.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const API_KEY = 'js-test-api-key';
export const JWT_SECRET = 'js-test-jwt-secret-0123456789abcdef';

const procs = new Set<Proc>();
let tmpRoot: string | undefined;

function tmp(): string {
  if (!tmpRoot) tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'updraft-js-'));
  return tmpRoot;
}

process.on('exit', () => {
  for (const p of procs) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  if (tmpRoot) fs.rmSync(tmpRoot, { recursive: true, force: true });
});

/** The repository root: the first directory above this file holding go.mod. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'go.mod'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('no go.mod above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

let bin: string | undefined;

/** The updraft binary: $UPDRAFT_BIN (built once by scripts/test.mjs), else built here once. */
export function updraftBinary(): string {
  if (process.env.UPDRAFT_BIN) return process.env.UPDRAFT_BIN;
  if (!bin) {
    const out = path.join(tmp(), 'updraft');
    execFileSync('go', ['build', '-buildvcs=false', '-o', out, './cmd/updraft'], { cwd: repoRoot(), stdio: 'inherit' });
    bin = out;
  }
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Polls cond every 10 ms until it holds, failing with what after timeoutMs. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A child process whose output goes to a log file. */
export class Proc {
  readonly child: ChildProcess;
  readonly log: string;
  readonly exited: Promise<void>;
  done = false;
  constructor(cmd: string, args: string[], env: Record<string, string>, name: string, opts: { uid?: number; gid?: number; cwd?: string } = {}) {
    this.log = path.join(tmp(), `${name}.log`);
    const fd = fs.openSync(this.log, 'a');
    this.child = spawn(cmd, args, { env, stdio: ['ignore', fd, fd], ...opts });
    fs.closeSync(fd);
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    void this.exited.then(() => {
      this.done = true;
      procs.delete(this);
    });
    this.child.once('error', () => {});
    procs.add(this);
  }
  get pid(): number {
    return this.child.pid ?? -1;
  }
  logs(): string {
    try {
      return fs.readFileSync(this.log, 'utf8');
    } catch {
      return '';
    }
  }
  tail(n = 40): string {
    return this.logs().trimEnd().split('\n').slice(-n).join('\n');
  }
  /** Sends SIGTERM (a gateway drains and exits). */
  terminate(): void {
    if (!this.done) process.kill(this.pid, 'SIGTERM');
  }
  /** Sends SIGKILL and waits (bounded) for the process to exit. */
  async kill(): Promise<void> {
    if (this.done) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`pid ${this.pid} did not exit after SIGKILL`)), 10_000)));
    try {
      await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Stops every process started by this harness. */
export async function stopAll(): Promise<void> {
  await Promise.all([...procs].map((p) => p.kill()));
}

/** Sends one command to a Redis server and returns the first line of the answer. */
export function redisCommand(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`redis ${args[0]}: no answer`));
    }, 2000);
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('data', (d) => {
      buf += d.toString();
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        clearTimeout(timer);
        s.end();
        resolve(buf.slice(0, i));
      }
    });
    s.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''));
  });
}

export class Redis {
  constructor(
    readonly proc: Proc,
    readonly port: number,
  ) {}
  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }
  command(...args: string[]): Promise<string> {
    return redisCommand(this.port, ...args);
  }
}

export async function startRedis(): Promise<Redis> {
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(tmp(), 'redis-'));
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no'];
    const p = new Proc('redis-server', args, { PATH: process.env.PATH ?? '' }, `redis-${port}`);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !p.done) {
      try {
        if ((await redisCommand(port, 'PING')) === '+PONG') return new Redis(p, port);
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    last = p.tail();
    await p.kill();
  }
  throw new Error(`redis-server did not start (is it installed? apt-get install redis-server):\n${last}`);
}

export class Node {
  constructor(
    readonly proc: Proc,
    readonly addr: string,
  ) {}
  get url(): string {
    return `http://${this.addr}`;
  }
  get wsUrl(): string {
    return `ws://${this.addr}/api/realtime`;
  }
  kill(): Promise<void> {
    return this.proc.kill();
  }
}

/**
 * Starts `updraft <command>` on a free loopback port with env (and PATH,
 * HOME, the address, Redis and a warn log level), and waits until `probe`
 * answers 200; a port taken meanwhile is retried on another.
 */
async function startUpdraft(command: string, probe: string, redisUrl: string, env: Record<string, string>): Promise<{ p: Proc; addr: string }> {
  const binary = updraftBinary();
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const addr = `127.0.0.1:${await freePort()}`;
    const full: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      UPDRAFT_ADDR: addr,
      UPDRAFT_REDIS_URL: redisUrl,
      UPDRAFT_LOG_LEVEL: 'warn',
      ...env,
    };
    const p = new Proc(binary, [command], full, `${command}-${addr.replace(':', '-')}`);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && !p.done) {
      try {
        const r = await fetch(`http://${addr}${probe}`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return { p, addr };
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await p.kill();
    last = p.tail();
    if (!last.includes('address already in use')) break;
  }
  throw new Error(`updraft ${command} did not answer ${probe}; last log lines:\n${last}`);
}

/** Starts `updraft serve` on a free port with the test secrets and extra env, and waits for /readyz. */
export async function startNode(redisUrl: string, extra: Record<string, string> = {}): Promise<Node> {
  const { p, addr } = await startUpdraft('serve', '/readyz', redisUrl, { UPDRAFT_API_KEY: API_KEY, UPDRAFT_JWT_SECRET: JWT_SECRET, ...extra });
  return new Node(p, addr);
}

/**
 * Starts `updraft tracker` (the cluster's change tracker) on a free port
 * with extra env (UPDRAFT_DATABASE_URL, UPDRAFT_TRACK_TABLES, ...), and
 * waits for its /healthz: it runs, leading or standing by.
 */
export async function startTracker(redisUrl: string, extra: Record<string, string>): Promise<Proc> {
  return (await startUpdraft('tracker', '/healthz', redisUrl, extra)).p;
}

/** Mints an HS256 JWT for the test secret; exp defaults to an hour from now. */
export function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(body)}`;
  return `${head}.${createHmac('sha256', JWT_SECRET).update(head).digest('base64url')}`;
}

/** A TCP proxy on a loopback port that forwards to target and can cut every connection. */
export class Proxy {
  private server: net.Server;
  private socks = new Set<net.Socket>();
  port = 0;
  constructor(public targetPort: number) {
    this.server = net.createServer((client) => {
      const up = net.connect(this.targetPort, '127.0.0.1');
      this.socks.add(client).add(up);
      const end = () => {
        client.destroy();
        up.destroy();
        this.socks.delete(client);
        this.socks.delete(up);
      };
      client.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
      client.pipe(up);
      up.pipe(client);
    });
  }
  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }
  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/api/realtime`;
  }
  /** Cuts every connection at once, as a network failure would. */
  dropAll(): void {
    for (const s of this.socks) s.destroy();
    this.socks.clear();
  }
  close(): Promise<void> {
    this.dropAll();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export function uniq(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** A throwaway PostgreSQL server (database updraft, superuser updraft, no password). */
export class Postgres {
  constructor(
    readonly proc: Proc,
    readonly port: number,
    private bin: string,
    private dir: string,
  ) {}
  get url(): string {
    return `postgres://updraft@127.0.0.1:${this.port}/updraft?sslmode=disable`;
  }
  /** Runs SQL with psql and returns its unaligned output. */
  sql(sql: string, db = 'updraft'): string {
    return execFileSync(path.join(this.bin, 'psql'), ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(this.port), '-U', 'updraft', '-d', db, '-c', sql], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 10_000,
    });
  }
  /** Fast shutdown (SIGINT), SIGKILL after 10 s; removes the data directory. */
  async stop(): Promise<void> {
    if (!this.proc.done) {
      process.kill(this.proc.pid, 'SIGINT');
      const timer = setTimeout(() => void this.proc.kill(), 10_000);
      await this.proc.exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts PostgreSQL from the newest /usr/lib/postgresql/N/bin. As root, it
 * runs as the postgres system user, since PostgreSQL refuses root.
 */
export async function startPostgres(): Promise<Postgres> {
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb'))) : [];
  versions.sort((x, y) => Number(y) - Number(x));
  if (!versions.length) throw new Error('PostgreSQL server not found in /usr/lib/postgresql: apt-get install postgresql');
  const bin = path.join(base, versions[0]!, 'bin');
  let ids: { uid?: number; gid?: number } = {};
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    ids = { uid, gid };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'updraft-js-pg-'));
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  fs.mkdirSync(sock);
  fs.chmodSync(dir, 0o755);
  if (ids.uid !== undefined) for (const d of [dir, sock]) fs.chownSync(d, ids.uid, ids.gid!);
  const env = { PATH: process.env.PATH ?? '', LC_ALL: 'C' };
  execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'updraft', '-A', 'trust', '-E', 'UTF8', '--no-locale', '--no-sync'], {
    ...ids,
    env,
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const args = ['-D', data, '-p', String(port), '-k', sock, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'full_page_writes=off', '-c', 'dynamic_shared_memory_type=mmap'];
    const p = new Proc(path.join(bin, 'postgres'), args, env, `postgres-${port}`, { ...ids, cwd: dir });
    const pg = new Postgres(p, port, bin, dir);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !p.done) {
      try {
        pg.sql('SELECT 1', 'postgres');
        pg.sql('CREATE DATABASE updraft', 'postgres');
        return pg;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    last = p.tail();
    await p.kill();
  }
  fs.rmSync(dir, { recursive: true, force: true });
  throw new Error(`PostgreSQL did not start:\n${last}`);
}
