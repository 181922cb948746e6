//! The domain's one error type: what went wrong, in a sentence the user can act on, and of
//! which kind. Domain functions return it; the HTTP layer turns the kind into a status in one
//! place (`http::error`), so no handler picks a status by hand.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is sound but the current state refuses it (a deploy in progress, a backup
    /// running, a name taken).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong: a bad value, an unknown process, a backup that cannot be
    /// restored.
    #[error("{0}")]
    Invalid(String),
    /// The caller acts for something that is not its own (a node for another node, a user on
    /// an app they hold no role on).
    #[error("{0}")]
    Forbidden(String),
    /// Who is asking is not known: no credential, or a wrong, expired or revoked one.
    #[error("{0}")]
    Unauthenticated(String),
    /// Too many attempts (sign-in failures); try again after the given seconds.
    #[error("{0}")]
    TooMany(String, u64),
    /// Something the platform needs is missing right now (no ready node to run on).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the platform; the details go to the log, not to the user.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Forbidden(m) => Self::Forbidden(m),
            e @ StoreError::Fenced(_) => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<protocol::NameError> for DomainError {
    fn from(e: protocol::NameError) -> Self {
        Self::Invalid(e.to_string())
    }
}
