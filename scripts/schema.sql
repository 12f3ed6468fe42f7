-- The app's Prisma "Message" table, as `prisma migrate` creates it with the default mapping
-- (model Message { ... } -> table "Message", camelCase column names quoted as-is).
-- Loaded by scripts/services.sh into the throwaway development/test database. Idempotent.
--
-- media-ingest reads/writes only "id", "providerMediaId", "mediaStoredUrl", "mediaStoredAt",
-- "mediaStorageBackend" (and orders by "createdAt"); "conversationId" and "body" stand for the
-- app's other columns, so tests can prove they are left alone.

CREATE TABLE IF NOT EXISTS "Message" (
    "id" SERIAL NOT NULL,
    "conversationId" INTEGER,
    "body" TEXT,
    "providerMediaId" TEXT,
    "mediaStoredUrl" TEXT,
    "mediaStoredAt" TIMESTAMP(3),
    "mediaStorageBackend" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Message_pkey" PRIMARY KEY ("id")
);

CREATE INDEX IF NOT EXISTS "Message_createdAt_idx" ON "Message"("createdAt");
