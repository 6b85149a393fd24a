-- One row per instance lifetime: opened when the instance is seen Running, closed when it is
-- gone. Keyed by the instance id, never by (team, challenge) alone, so an old instance's close
-- can never touch a newer one.
CREATE TABLE IF NOT EXISTS instance_tracking (
  instance_id TEXT NOT NULL PRIMARY KEY,
  team_id BIGINT NOT NULL,
  challenge_id BIGINT NOT NULL,
  route TEXT NULL,
  started_at_ms BIGINT NOT NULL,
  expires_at_ms BIGINT NULL,
  stopped_at_ms BIGINT NULL,
  stop_reason TEXT NULL
);
CREATE INDEX IF NOT EXISTS instance_tracking_team_challenge ON instance_tracking (team_id, challenge_id);
CREATE INDEX IF NOT EXISTS instance_tracking_open ON instance_tracking (stopped_at_ms);
