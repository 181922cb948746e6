//! The API's one error type: a request that could not be read or authenticated, or what the
//! domain refused (`DomainError`, whose kind picks the status here and nowhere else). 4xx
//! answers carry a sentence saying what was wrong; 5xx details stay in the log.

use crate::error::DomainError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read (a broken body, a wrong content type).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

pub type ApiResult<T> = Result<T, ApiError>;

// Handlers read the store and check names directly; their errors mean what the domain's do.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Domain(e.into())
    }
}

impl From<protocol::NameError> for ApiError {
    fn from(e: protocol::NameError) -> Self {
        Self::Domain(e.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Domain(e.into())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Domain(e) => match e {
                DomainError::NotFound(_) => StatusCode::NOT_FOUND,
                DomainError::Conflict(_) => StatusCode::CONFLICT,
                DomainError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
                DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                DomainError::TooMany(..) => StatusCode::TOO_MANY_REQUESTS,
                DomainError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                DomainError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = match &self {
            Self::Domain(DomainError::Internal(e)) => {
                tracing::error!(error = %format!("{e:#}"), "request failed");
                "internal error in the paas server; see its log".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(ErrorBody { error })).into_response();
        if let Self::Domain(DomainError::TooMany(_, secs)) = self {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_refusal_has_its_status() {
        let status = |e: DomainError| ApiError::from(e).status().as_u16();
        assert_eq!(status(DomainError::NotFound("x".into())), 404);
        assert_eq!(status(DomainError::Conflict("x".into())), 409);
        assert_eq!(status(DomainError::Invalid("x".into())), 422);
        assert_eq!(status(DomainError::Forbidden("x".into())), 403);
        assert_eq!(status(DomainError::Unavailable("x".into())), 503);
        assert_eq!(status(DomainError::Internal(anyhow::anyhow!("x"))), 500);
        assert_eq!(ApiError::from(StoreError::NotFound("x".into())).status().as_u16(), 404);
        assert_eq!(ApiError::BadRequest("x".into()).status().as_u16(), 400);
    }

    #[tokio::test]
    async fn internal_details_stay_in_the_log() {
        let resp = ApiError::from(anyhow::anyhow!("secret path /x")).into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 10).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("secret path") && text.contains("internal error"), "{text}");
    }
}
