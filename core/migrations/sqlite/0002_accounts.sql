-- Accounts: users, teams, brackets, API tokens (stored as SHA-256 digests), the contest config
-- admins change at runtime (name/value rows, as CTFd's `config` table), and the secrets the
-- service generates on first start (the session-signing key), so restarts keep sessions.
-- `name_key` is the normalised name (NFKC, lower case, trimmed): UNIQUE on it refuses names
-- that differ only in case or Unicode form. Integers are BIGINT; flags are 0/1.

CREATE TABLE IF NOT EXISTS brackets (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name VARCHAR(255) NOT NULL,
  description TEXT NULL,
  type VARCHAR(16) NOT NULL DEFAULT 'teams'
);
CREATE TABLE IF NOT EXISTS teams (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name VARCHAR(128) NOT NULL,
  name_key VARCHAR(128) NOT NULL,
  email VARCHAR(255) NULL,
  captain_id BIGINT NULL,
  invite_code VARCHAR(64) NOT NULL,
  member_count BIGINT NOT NULL DEFAULT 0,
  bracket_id BIGINT NULL,
  website VARCHAR(255) NULL,
  affiliation VARCHAR(255) NULL,
  country VARCHAR(32) NULL,
  hidden BIGINT NOT NULL DEFAULT 0,
  banned BIGINT NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL,
  CONSTRAINT teams_name_key UNIQUE (name_key),
  CONSTRAINT teams_invite UNIQUE (invite_code)
);
CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name VARCHAR(128) NOT NULL,
  name_key VARCHAR(128) NOT NULL,
  email VARCHAR(255) NULL,
  email_key VARCHAR(255) NULL,
  password VARCHAR(255) NOT NULL,
  type VARCHAR(16) NOT NULL DEFAULT 'user',
  verified BIGINT NOT NULL DEFAULT 0,
  hidden BIGINT NOT NULL DEFAULT 0,
  banned BIGINT NOT NULL DEFAULT 0,
  team_id BIGINT NULL,
  bracket_id BIGINT NULL,
  website VARCHAR(255) NULL,
  affiliation VARCHAR(255) NULL,
  country VARCHAR(32) NULL,
  session_uuid VARCHAR(64) NOT NULL,
  created_ms BIGINT NOT NULL,
  CONSTRAINT users_name_key UNIQUE (name_key),
  CONSTRAINT users_email_key UNIQUE (email_key)
);
CREATE INDEX IF NOT EXISTS users_team ON users (team_id);
CREATE TABLE IF NOT EXISTS tokens (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id BIGINT NOT NULL,
  type VARCHAR(16) NOT NULL DEFAULT 'user',
  digest VARCHAR(64) NOT NULL,
  description TEXT NULL,
  created_ms BIGINT NOT NULL,
  expiration_ms BIGINT NOT NULL,
  CONSTRAINT tokens_digest UNIQUE (digest)
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id);
CREATE TABLE IF NOT EXISTS contest_config (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts_secrets (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  value VARCHAR(128) NOT NULL
);
