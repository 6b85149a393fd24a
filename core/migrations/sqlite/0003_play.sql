-- Play: challenges and what hangs off them (flags, hints, files, tags, topics), every
-- submission, the solves (UNIQUE (challenge_id, team_id): the last guard against a double
-- solve), hint unlocks (UNIQUE (team_id, type, target): a cost is charged once), awards,
-- notifications, tickets, the team action log, flag-sharing events, the per-team dynamic
-- flags handed out and the secret they derive from. Users and teams (0002) are referenced by
-- id columns only. Integers are BIGINT (the type sqlx Any reads the same on both dialects);
-- flags are 0/1.

CREATE TABLE IF NOT EXISTS challenges (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name VARCHAR(255) NOT NULL,
  category VARCHAR(255) NOT NULL DEFAULT '',
  description TEXT NOT NULL,
  connection_info TEXT NULL,
  value BIGINT NOT NULL DEFAULT 0,
  type VARCHAR(16) NOT NULL DEFAULT 'standard',
  initial BIGINT NULL,
  minimum BIGINT NULL,
  decay BIGINT NULL,
  decay_function VARCHAR(16) NOT NULL DEFAULT 'linear',
  first_blood_bonus BIGINT NOT NULL DEFAULT 0,
  state VARCHAR(16) NOT NULL DEFAULT 'visible',
  max_attempts BIGINT NOT NULL DEFAULT 0,
  cooldown_secs BIGINT NOT NULL DEFAULT 0,
  requirements TEXT NULL,
  position BIGINT NOT NULL DEFAULT 0,
  image VARCHAR(512) NULL,
  command TEXT NULL,
  port BIGINT NULL,
  cpu_millicores BIGINT NULL,
  memory_mib BIGINT NULL,
  lifetime_secs BIGINT NULL,
  protocol VARCHAR(8) NULL,
  harden BIGINT NOT NULL DEFAULT 0,
  gvisor BIGINT NOT NULL DEFAULT 0,
  team_flag BIGINT NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS flags (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NOT NULL,
  type VARCHAR(16) NOT NULL DEFAULT 'static',
  content TEXT NOT NULL,
  data VARCHAR(32) NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS flags_challenge ON flags (challenge_id);
CREATE TABLE IF NOT EXISTS hints (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NOT NULL,
  title VARCHAR(255) NOT NULL DEFAULT '',
  content TEXT NOT NULL,
  cost BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hints_challenge ON hints (challenge_id);
CREATE TABLE IF NOT EXISTS unlocks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id BIGINT NOT NULL,
  team_id BIGINT NOT NULL,
  target BIGINT NOT NULL,
  type VARCHAR(16) NOT NULL DEFAULT 'hints',
  created_ms BIGINT NOT NULL,
  CONSTRAINT unlocks_once UNIQUE (team_id, type, target)
);
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NULL,
  type VARCHAR(16) NOT NULL DEFAULT 'challenge',
  location VARCHAR(512) NOT NULL,
  sha1sum VARCHAR(64) NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS files_challenge ON files (challenge_id);
CREATE TABLE IF NOT EXISTS tags (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NOT NULL,
  value VARCHAR(255) NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_challenge ON tags (challenge_id);
CREATE TABLE IF NOT EXISTS topics (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NOT NULL,
  value VARCHAR(255) NOT NULL
);
CREATE INDEX IF NOT EXISTS topics_challenge ON topics (challenge_id);
CREATE TABLE IF NOT EXISTS submissions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  team_id BIGINT NOT NULL,
  ip VARCHAR(64) NOT NULL DEFAULT '',
  provided TEXT NOT NULL,
  type VARCHAR(16) NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_team_challenge ON submissions (team_id, challenge_id);
CREATE INDEX IF NOT EXISTS submissions_challenge ON submissions (challenge_id);
CREATE TABLE IF NOT EXISTS solves (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  submission_id BIGINT NOT NULL,
  challenge_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  team_id BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  CONSTRAINT solves_once UNIQUE (challenge_id, team_id)
);
CREATE INDEX IF NOT EXISTS solves_team ON solves (team_id);
CREATE TABLE IF NOT EXISTS awards (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id BIGINT NULL,
  team_id BIGINT NOT NULL,
  name VARCHAR(255) NOT NULL,
  description TEXT NULL,
  value BIGINT NOT NULL,
  category VARCHAR(255) NULL,
  icon VARCHAR(64) NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS awards_team ON awards (team_id);
CREATE TABLE IF NOT EXISTS notifications (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  title VARCHAR(255) NOT NULL,
  content TEXT NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id BIGINT NOT NULL,
  team_id BIGINT NULL,
  challenge_id BIGINT NULL,
  title VARCHAR(255) NOT NULL,
  content TEXT NOT NULL,
  state VARCHAR(16) NOT NULL DEFAULT 'open',
  response TEXT NULL,
  created_ms BIGINT NOT NULL,
  closed_ms BIGINT NULL
);
CREATE INDEX IF NOT EXISTS tickets_user ON tickets (user_id);
CREATE TABLE IF NOT EXISTS team_actions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  team_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  action VARCHAR(32) NOT NULL,
  challenge_id BIGINT NULL,
  detail VARCHAR(255) NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS team_actions_team ON team_actions (team_id);
CREATE TABLE IF NOT EXISTS cheat_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  challenge_id BIGINT NOT NULL,
  team_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  flag_owner_team_id BIGINT NOT NULL,
  submission_id BIGINT NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS cheat_events_challenge ON cheat_events (challenge_id);
CREATE TABLE IF NOT EXISTS team_flags (
  challenge_id BIGINT NOT NULL,
  team_id BIGINT NOT NULL,
  flag VARCHAR(128) NOT NULL,
  PRIMARY KEY (challenge_id, team_id)
);
CREATE INDEX IF NOT EXISTS team_flags_flag ON team_flags (challenge_id, flag);
CREATE TABLE IF NOT EXISTS play_secrets (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  value VARCHAR(128) NOT NULL
);
