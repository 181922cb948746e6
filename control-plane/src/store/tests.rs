//! Store tests on in-memory SQLite: migrations (and upgrading a data directory of the release
//! before sqlx's migrator), strict decoding, and the release transactions.

use super::*;

/// Existing environments keep their Docker names on upgrade, except those whose old names
/// already collided with another environment's.
#[tokio::test]
async fn the_names_migration_keeps_old_names_unless_they_collided() {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let migrations: Vec<&str> = MIGRATOR.iter().map(|m| &*m.sql).collect();
    let at = migrations.iter().position(|m| m.contains("ADD COLUMN legacy_names")).unwrap();
    for sql in &migrations[..at] {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    }
    for (app, env) in [("shop", "eu-production"), ("shop-eu", "production"), ("notes", "production")] {
        sqlx::query("INSERT OR IGNORE INTO apps (name, created_at) VALUES (?, '')")
            .bind(app)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO envs (app, name, created_at) VALUES (?, ?, '')")
            .bind(app)
            .bind(env)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(migrations[at]).execute(&pool).await.unwrap();
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT app, legacy_names FROM envs ORDER BY app").fetch_all(&pool).await.unwrap();
    let expected = [("notes", true), ("shop", false), ("shop-eu", false)];
    assert_eq!(rows, expected.map(|(a, l)| (a.to_string(), l)).to_vec());
    // Environments made after the upgrade get the new names.
    sqlx::query("INSERT INTO envs (app, name, created_at) VALUES ('notes', 'staging', '')")
        .execute(&pool)
        .await
        .unwrap();
    let legacy: bool = sqlx::query_scalar("SELECT legacy_names FROM envs WHERE name = 'staging'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!legacy);
}
