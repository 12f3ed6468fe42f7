// Helpers of the media end-to-end tests: a private Postgres schema with the app's
// "Message" table, the Graph fake, and file hashing.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const DATABASE_URL = process.env.DATABASE_URL || '';

// libpq (psql) refuses Prisma's ?schema=; strip the query for psql.
function psqlUrl() {
  return DATABASE_URL.split('?')[0];
}

export async function psql(sql) {
  const { stdout } = await execFileP('psql', [psqlUrl(), '-qAtX', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    { maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

export async function requireDatabase() {
  if (!DATABASE_URL) {
    console.log('# skip: DATABASE_URL is not set (run scripts/services.sh up)');
    process.exit(77);
  }
  try {
    await psql('SELECT 1');
  } catch (e) {
    console.log(`# skip: PostgreSQL is not reachable: ${e.message.split('\n')[0]}`);
    process.exit(77);
  }
}

// A private schema with the app's table; returns {schema, url, drop()}.
export async function privateSchema(tag) {
  const schema = `mi_${tag}_${randomBytes(3).toString('hex')}`;
  await psql(`CREATE SCHEMA "${schema}";
    CREATE TABLE "${schema}"."Message" ("id" SERIAL PRIMARY KEY, "conversationId" INTEGER,
      "body" TEXT, "providerMediaId" TEXT, "mediaStoredUrl" TEXT, "mediaStoredAt" TIMESTAMP(3),
      "mediaStorageBackend" TEXT, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP)`);
  const base = DATABASE_URL.split('?')[0];
  return {
    schema,
    url: `${base}?schema=${schema}`,
    drop: () => psql(`DROP SCHEMA "${schema}" CASCADE`),
  };
}

// Insert rows with the given provider media ids; returns their ids in order.
export async function insertMessages(schema, mediaIds) {
  const values = mediaIds.map((m) => `('${m.replace(/'/g, "''")}')`).join(',');
  const out = await psql(`INSERT INTO "${schema}"."Message" ("providerMediaId") VALUES ${values} RETURNING "id"`);
  return out.split('\n').map(Number);
}

export async function rows(schema) {
  const out = await psql(`SELECT json_agg(m ORDER BY "id") FROM "${schema}"."Message" m`);
  return JSON.parse(out || '[]') || [];
}

export function sha256File(path) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

export async function control(fake, method, path, body) {
  const r = await fetch(`http://127.0.0.1:${fake.port}/__control/${path}`, {
    method, headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`control ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
