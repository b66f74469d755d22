//! The benchmarks' HTTP client.

use super::*;

/// How long one request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One keep-alive HTTP/1.1 connection to the server, opened again after a failed request.
///
/// It speaks hyper's connection API rather than reqwest: client and server share the
/// machine's cores, and reqwest's pool, redirect policy and URL handling cost about a quarter
/// of the CPU of a submit run (profiled), which the server would otherwise have had.
pub(crate) struct Connection {
    addr: SocketAddr,
    /// The media types it asks for (`Accept`).
    accept: &'static str,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// An answer: status, `Retry-After`, body.
pub(crate) type Response = (u16, Option<Bytes>, Bytes);

impl Connection {
    /// A connection asking for JSON (opened at its first request).
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            accept: "application/json",
            sender: None,
        }
    }

    /// A connection asking for HTML, as a browser does.
    pub(crate) fn html(addr: SocketAddr) -> Self {
        Self {
            accept: "text/html",
            ..Self::new(addr)
        }
    }

    pub(crate) async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, String> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.try_request(method, path, body))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
        if answer.is_err() {
            // Whatever state it is in, the next request starts on a fresh connection.
            self.sender = None;
        }
        answer
    }

    async fn try_request(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, String> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let stream = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
                let _ = stream.set_nodelay(true);
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("HTTP handshake: {e}"))?;
                tokio::spawn(connection);
                self.sender.insert(sender)
            }
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, self.accept)
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, retry_after, body))
    }

    pub(crate) async fn get(&mut self, path: &str) -> Result<Bytes, Error> {
        let (status, _, body) = self
            .request(hyper::Method::GET, path, Bytes::new())
            .await
            .map_err(Error::Remote)?;
        if status != 200 {
            return Err(Error::Remote(format!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body)
    }

    pub(crate) async fn metrics(&mut self) -> Result<String, Error> {
        let body = self.get("/metrics").await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
