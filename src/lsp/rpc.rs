//! JSON-RPC 2.0 over a framed stream: request ids, the pending-reply map, answers to server→client
//! requests, and routing of notifications.
//!
//! Knows nothing of Lean. Invariant: a request either gets the server's reply, or a typed error
//! (`Timeout`, `StreamClosed`); neither of those errors is ever confused with a result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::frame::{read_frame, write_frame};

/// JSON-RPC error code for an unknown method.
const METHOD_NOT_FOUND: i64 = -32601;

#[derive(Debug, thiserror::Error, Clone)]
pub enum RpcError {
    #[error("request {method} (id {id}) got no reply within {timeout:?}")]
    Timeout { method: String, id: i64, timeout: Duration },
    #[error("the language server's stream closed before request {method} was answered")]
    StreamClosed { method: String },
    #[error("the language server answered {method} with error {code}: {message}")]
    Server { method: String, code: i64, message: String },
}

/// A notification from the server, in arrival order.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

type Pending = Arc<Mutex<HashMap<i64, (String, oneshot::Sender<Result<Value, RpcError>>)>>>;

/// Handle to a running connection. Cheap to clone; all clones share the id space.
#[derive(Clone)]
pub struct RpcClient {
    next_id: Arc<AtomicI64>,
    outgoing: mpsc::UnboundedSender<Value>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    routed: Arc<AtomicU64>,
}

impl RpcClient {
    /// Starts the reader and writer tasks. Notifications arrive on the returned receiver in the
    /// order the server sent them, and always before the reply to any later request is delivered.
    pub fn start<R, W>(reader: R, writer: W) -> (RpcClient, mpsc::UnboundedReceiver<Notification>)
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let routed = Arc::new(AtomicU64::new(0));

        let mut writer = writer;
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if let Err(e) = write_frame(&mut writer, &msg).await {
                    tracing::debug!(error = %e, "language-server stdin closed");
                    break;
                }
            }
        });

        let client = RpcClient {
            next_id: Arc::new(AtomicI64::new(1)),
            outgoing: out_tx.clone(),
            pending: pending.clone(),
            closed: closed.clone(),
            routed: routed.clone(),
        };
        let mut reader = reader;
        tokio::spawn(async move {
            loop {
                match read_frame(&mut reader).await {
                    Ok(Some(msg)) => route(msg, &pending, &note_tx, &out_tx, &routed),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "language-server stream broken");
                        break;
                    }
                }
            }
            closed.store(true, Ordering::SeqCst);
            let drained: Vec<_> = pending.lock().map(|mut p| p.drain().collect()).unwrap_or_default();
            for (_, (method, tx)) in drained {
                let _ = tx.send(Err(RpcError::StreamClosed { method }));
            }
        });
        (client, note_rx)
    }

    /// Notifications handed to the receiver so far. Every notification the server sent before a
    /// reply is counted by the time that reply is delivered.
    pub fn notifications_routed(&self) -> u64 {
        self.routed.load(Ordering::SeqCst)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends a notification. Fails only if the connection is gone.
    pub fn notify(&self, method: &str, params: Value) -> Result<(), RpcError> {
        if self.is_closed() {
            return Err(RpcError::StreamClosed { method: method.into() });
        }
        self.outgoing
            .send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .map_err(|_| RpcError::StreamClosed { method: method.into() })
    }

    /// Sends a request and waits for its reply. The request is queued before this returns its
    /// future's first poll, so writes keep call order. On timeout a `$/cancelRequest` is sent
    /// and a late reply is dropped.
    pub async fn request(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, (method.to_string(), tx));
        }
        if self.is_closed()
            || self.outgoing.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).is_err()
        {
            self.forget(id);
            return Err(RpcError::StreamClosed { method: method.into() });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::StreamClosed { method: method.into() }),
            Err(_) => {
                self.forget(id);
                let _ = self.notify("$/cancelRequest", json!({"id": id}));
                Err(RpcError::Timeout { method: method.into(), id, timeout })
            }
        }
    }

    fn forget(&self, id: i64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }
}

fn route(
    msg: Value,
    pending: &Pending,
    notes: &mpsc::UnboundedSender<Notification>,
    out: &mpsc::UnboundedSender<Value>,
    routed: &AtomicU64,
) {
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    let id = msg.get("id").cloned().filter(|v| !v.is_null());
    match (method, id) {
        (Some(method), Some(id)) => {
            // A server→client request: answer what a headless verifier can, refuse the rest.
            let reply = match method.as_str() {
                "workspace/configuration" => {
                    let n = msg["params"]["items"].as_array().map_or(0, Vec::len);
                    json!({"jsonrpc": "2.0", "id": id, "result": vec![Value::Null; n]})
                }
                "client/registerCapability" | "client/unregisterCapability" | "window/workDoneProgress/create" => {
                    json!({"jsonrpc": "2.0", "id": id, "result": null})
                }
                _ => json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": METHOD_NOT_FOUND, "message": format!("unsupported: {method}")}}),
            };
            let _ = out.send(reply);
        }
        (Some(method), None) => {
            let params = msg.get("params").cloned().unwrap_or(Value::Null);
            routed.fetch_add(1, Ordering::SeqCst);
            let _ = notes.send(Notification { method, params });
        }
        (None, Some(id)) => {
            let Some(id) = id.as_i64() else {
                tracing::warn!(?id, "reply with a non-integer id dropped");
                return;
            };
            let entry = pending.lock().ok().and_then(|mut p| p.remove(&id));
            let Some((method, tx)) = entry else {
                tracing::debug!(id, "late or unknown reply dropped");
                return;
            };
            let result = if let Some(err) = msg.get("error") {
                Err(RpcError::Server {
                    method,
                    code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: err.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                })
            } else {
                Ok(msg.get("result").cloned().unwrap_or(Value::Null))
            };
            let _ = tx.send(result);
        }
        (None, None) => tracing::warn!("message with neither method nor id dropped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsp::frame::{read_frame, write_frame};
    use tokio::io::{duplex, split, BufReader};

    /// An in-memory peer: returns the client and the server's end of the pipe.
    fn pair() -> (RpcClient, mpsc::UnboundedReceiver<Notification>, tokio::io::DuplexStream) {
        let (client_end, server_end) = duplex(1 << 16);
        let (r, w) = split(client_end);
        let (c, n) = RpcClient::start(BufReader::new(r), w);
        (c, n, server_end)
    }

    #[tokio::test]
    async fn reply_is_matched_to_its_request_by_id() {
        let (client, _notes, server) = pair();
        let (sr, mut sw) = split(server);
        let mut sr = BufReader::new(sr);
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("ping", json!({}), Duration::from_secs(5)).await }
        });
        let req = read_frame(&mut sr).await.unwrap().unwrap();
        assert_eq!(req["method"], "ping");
        write_frame(&mut sw, &json!({"jsonrpc":"2.0","id": req["id"], "result": {"pong": 1}})).await.unwrap();
        assert_eq!(call.await.unwrap().unwrap(), json!({"pong": 1}));
    }

    #[tokio::test]
    async fn unanswered_request_times_out_and_sends_cancel() {
        let (client, _notes, server) = pair();
        let (sr, _sw) = split(server);
        let mut sr = BufReader::new(sr);
        let err = client.request("slow", json!({}), Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, RpcError::Timeout { .. }));
        let _req = read_frame(&mut sr).await.unwrap().unwrap();
        let cancel = read_frame(&mut sr).await.unwrap().unwrap();
        assert_eq!(cancel["method"], "$/cancelRequest");
    }

    #[tokio::test]
    async fn closed_stream_fails_pending_requests() {
        let (client, _notes, server) = pair();
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("x", json!({}), Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(server);
        assert!(matches!(call.await.unwrap(), Err(RpcError::StreamClosed { .. })));
    }

    #[tokio::test]
    async fn server_request_for_unknown_method_gets_method_not_found() {
        let (_client, _notes, server) = pair();
        let (sr, mut sw) = split(server);
        let mut sr = BufReader::new(sr);
        write_frame(&mut sw, &json!({"jsonrpc":"2.0","id": 7, "method": "weird/thing"})).await.unwrap();
        let reply = read_frame(&mut sr).await.unwrap().unwrap();
        assert_eq!(reply["id"], 7);
        assert_eq!(reply["error"]["code"], METHOD_NOT_FOUND);
    }

    #[tokio::test]
    async fn notifications_arrive_in_order() {
        let (_client, mut notes, server) = pair();
        let (_sr, mut sw) = split(server);
        for i in 0..3 {
            write_frame(&mut sw, &json!({"jsonrpc":"2.0","method":"n","params":{"i": i}})).await.unwrap();
        }
        for i in 0..3 {
            assert_eq!(notes.recv().await.unwrap().params["i"], i);
        }
    }
}
