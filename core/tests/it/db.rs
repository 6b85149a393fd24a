//! The database layer on both dialects: migrations apply once, tracking rows are idempotent and
//! keyed by instance. The same cases run on SQLite (a file in a temp dir) and on the real
//! MariaDB (a scratch database of its own).

use fctf_core::db::{Database, DbError, MIGRATIONS, ScratchDatabase, tracking::TrackingRow};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};

use crate::services::{mysql_url, require_mariadb};

async fn cases(db: &Database) {
    let applied = db.migrate().await.unwrap();
    assert_eq!(applied.len(), MIGRATIONS.len());
    assert!(
        db.migrate().await.unwrap().is_empty(),
        "a second run applies nothing"
    );
    assert_eq!(
        db.schema_version().await.unwrap(),
        MIGRATIONS.last().unwrap().version
    );

    let a = InstanceId::new();
    let b = InstanceId::new();
    let row = |instance| TrackingRow {
        instance,
        team: TeamId(7),
        challenge: ChallengeId(42),
        route: Some("127.0.0.1:4000".to_owned()),
        started_at_ms: 1_000,
        expires_at_ms: Some(61_000),
        stopped_at_ms: None,
        stop_reason: None,
    };
    assert!(db.tracking_open(&row(a)).await.unwrap());
    assert!(
        !db.tracking_open(&row(a)).await.unwrap(),
        "opening twice keeps one row"
    );
    assert!(db.tracking_open(&row(b)).await.unwrap());
    assert_eq!(db.tracking_open_rows().await.unwrap().len(), 2);

    assert!(db.tracking_extend(a, 90_000).await.unwrap());
    assert!(
        db.tracking_close(a, 5_000, "stopped by the player")
            .await
            .unwrap()
    );
    assert!(
        !db.tracking_close(a, 6_000, "again").await.unwrap(),
        "the first close wins"
    );
    assert!(
        !db.tracking_extend(a, 99_000).await.unwrap(),
        "a closed row is not extended"
    );
    let closed = db.tracking_get(a).await.unwrap().unwrap();
    assert_eq!(closed.stopped_at_ms, Some(5_000));
    assert_eq!(closed.expires_at_ms, Some(90_000));
    assert_eq!(closed.stop_reason.as_deref(), Some("stopped by the player"));

    let open = db.tracking_open_rows().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0], row(b), "closing a never touched b");
    assert_eq!(
        db.tracking_of_team(TeamId(7), 10, 0).await.unwrap().len(),
        2
    );
    assert_eq!(db.tracking_of_team(TeamId(7), 1, 1).await.unwrap().len(), 1);
    assert!(db.tracking_get(InstanceId::new()).await.unwrap().is_none());
}

#[tokio::test]
async fn sqlite_file_database() {
    let dir = tempdir();
    let url = format!("sqlite://{}/nested/fctf.db", dir.display());
    let db = Database::connect(&url, 4).await.unwrap();
    cases(&db).await;
    db.close().await;
    // Data survives a reconnect (the embedded default keeps its state across restarts).
    let again = Database::connect(&url, 4).await.unwrap();
    assert_eq!(again.tracking_open_rows().await.unwrap().len(), 1);
    again.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn mariadb_scratch_database() {
    require_mariadb().await;
    let scratch = ScratchDatabase::create(&mysql_url(), 4).await.unwrap();
    cases(&scratch.db).await;
    scratch.drop_database().await.unwrap();
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let err = Database::connect("mysql://root@127.0.0.1:1/test", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fctf-db-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
