//! LSP base-protocol framing: `Content-Length` headers around JSON bodies.
//!
//! Owns bytes ↔ JSON values and nothing else: no ids, no methods, no Lean.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A frame larger than this is treated as a protocol violation rather than allocated.
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error on the language-server stream: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame header: {0}")]
    Header(String),
    #[error("frame body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Option<serde_json::Value>, FrameError> {
    let mut content_length: Option<usize> = None;
    let mut line = String::new();
    let mut saw_any_header = false;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n == 0 {
            if saw_any_header {
                return Err(FrameError::Header("stream ended inside a header".into()));
            }
            return Ok(None);
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            if !saw_any_header {
                // Tolerate stray blank lines between frames.
                continue;
            }
            break;
        }
        saw_any_header = true;
        let (name, value) =
            trimmed.split_once(':').ok_or_else(|| FrameError::Header(format!("no ':' in header line {trimmed:?}")))?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            let len: usize =
                value.trim().parse().map_err(|_| FrameError::Header(format!("bad Content-Length {value:?}")))?;
            if len > MAX_FRAME_BYTES {
                return Err(FrameError::Header(format!("Content-Length {len} exceeds limit")));
            }
            content_length = Some(len);
        }
        // Content-Type and unknown headers are ignored, as the spec allows.
    }
    let len = content_length.ok_or_else(|| FrameError::Header("missing Content-Length".into()))?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Writes one frame and flushes, so a message is never left half in a buffer.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, value: &serde_json::Value) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value)?;
    let header = format!("Content-Length: {}\r\n\r\n", body.len());
    writer.write_all(header.as_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn round_trips_a_frame_with_unicode_body() {
        let (a, b) = tokio::io::duplex(1024);
        let mut w = a;
        let v = json!({"text": "∀ x, 𝔽 ≤ x"});
        write_frame(&mut w, &v).await.unwrap();
        drop(w);
        let mut r = BufReader::new(b);
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(v));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn missing_content_length_is_an_error() {
        let data: &[u8] = b"Content-Type: x\r\n\r\n{}";
        let mut r = BufReader::new(data);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Header(_))));
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let data: &[u8] = b"Content-Length: 10\r\n\r\n{}";
        let mut r = BufReader::new(data);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Io(_))));
    }
}
