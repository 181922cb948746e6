//! The roles of a managed PostgreSQL, from the control plane's side: the three secrets each
//! database has (the app role's, in `DATABASE_URL`; the `postgres` superuser's; the
//! `replicator`'s), generated and sealed here, filled in at start for databases from before
//! the platform's roles had their own, and the app names whose role would be PostgreSQL's own.

use crate::secrets::SecretBox;
use crate::store::Store;

/// A new random password: 48 hex digits, so it needs no quoting in SQL, conninfo or URLs.
pub fn generate_password() -> String {
    crate::tokens::generate().trim_start_matches("paas_").to_string()
}

/// Sealed fresh secrets for a new database: (app, superuser, replication).
pub fn new_secrets(secrets: &SecretBox) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let seal = || secrets.seal(generate_password().as_bytes());
    (seal(), seal(), seal())
}

/// Why an app cannot have a managed database, if it cannot: its role and database are named
/// after it, and these names belong to PostgreSQL or to the platform.
pub fn reserved_role(role: &str) -> Option<String> {
    let clash = matches!(
        role,
        "postgres"
            | "replicator"
            | "template0"
            | "template1"
            | "public"
            | "none"
            | "current_user"
            | "current_role"
            | "session_user"
    ) || role.starts_with("pg_");
    clash.then(|| {
        format!(
            "an app named {:?} cannot have a managed database: its role and database would be \
             named {role:?}, which PostgreSQL or the platform uses itself; use another app name",
            role.replace('_', "-")
        )
    })
}

/// Gives every database created before the platform's roles had their own secrets a superuser
/// and a replication password (the agents then move the running servers over). Runs at start,
/// before any assignment is served.
pub async fn fill_missing_secrets(store: &Store, secrets: &SecretBox) -> anyhow::Result<()> {
    for db in store.all_databases().await? {
        if db.superuser_password.is_empty() || db.replication_password.is_empty() {
            let seal = || secrets.seal(generate_password().as_bytes());
            store.fill_database_secrets(&db.app, &db.env, &seal(), &seal()).await?;
            tracing::info!(app = %db.app, env = %db.env, "generated the database's superuser and replication secrets");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_own_names_are_reserved() {
        for role in ["postgres", "replicator", "template1", "pg_thing", "public"] {
            assert!(super::reserved_role(role).is_some(), "{role}");
        }
        assert!(super::reserved_role("notes").is_none());
        assert!(super::reserved_role("pgadmin").is_none());
        let msg = super::reserved_role("pg_x").unwrap();
        assert!(msg.contains("\"pg-x\""), "{msg}");
    }

    #[test]
    fn passwords_are_hex_and_distinct() {
        let (a, b) = (super::generate_password(), super::generate_password());
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
