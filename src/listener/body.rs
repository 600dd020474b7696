//! Reading a request body under a cap, checked while streaming.
//!
//! A declared `Content-Length` over the cap is refused before a byte of the body is read; a
//! chunked body is refused as soon as it crosses the cap. Either way the server never holds more
//! than the cap in memory for one request.

use actix_web::web;
use futures_util::StreamExt;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the source's cap.
    #[error("body exceeds {cap} bytes")]
    TooLarge {
        /// The cap that applied.
        cap: usize,
    },
    /// The client went away or sent a broken stream.
    #[error("body could not be read")]
    Broken,
}

/// Read the whole body, refusing anything over `cap` bytes.
pub async fn read_capped(
    mut payload: web::Payload,
    declared_len: Option<u64>,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if declared_len.is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge { cap });
    }
    let capacity = declared_len.map_or(8 * 1024, |n| n as usize);
    let mut body = Vec::with_capacity(capacity.min(cap));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
