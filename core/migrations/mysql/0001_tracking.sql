-- One row per instance lifetime: opened when the instance is seen Running, closed when it is
-- gone. Keyed by the instance id, never by (team, challenge) alone, so an old instance's close
-- can never touch a newer one.
CREATE TABLE IF NOT EXISTS instance_tracking (
  instance_id CHAR(32) NOT NULL PRIMARY KEY,
  team_id BIGINT NOT NULL,
  challenge_id BIGINT NOT NULL,
  route VARCHAR(255) NULL,
  started_at_ms BIGINT NOT NULL,
  expires_at_ms BIGINT NULL,
  stopped_at_ms BIGINT NULL,
  stop_reason VARCHAR(255) NULL,
  KEY instance_tracking_team_challenge (team_id, challenge_id),
  KEY instance_tracking_open (stopped_at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
