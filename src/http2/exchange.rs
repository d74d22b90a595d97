//! One HTTP/2 stream, served as one HTTP/1.1 exchange through a [`pipe`].
//!
//! The stream's request becomes an HTTP/1.1 head (`CONNECT host:port`, or an absolute-form
//! request with its fields) that [`connection::converse`] reads from the pipe, so admission,
//! routing, destination rules, forwarding hygiene, limits and the access log are the ones every
//! HTTP/1.1 client gets. Its answer comes back through the pipe: the status line and fields
//! become the stream's HEADERS, the body its DATA, a tunnel's bytes its DATA both ways. Ends
//! map one to one: END_STREAM from the client is a half-close, the proxy's close is
//! END_STREAM; a client's RST_STREAM fails the proxy's end (a tunnel resets its upstream), and
//! an answer the proxy aborts (a failed tunnel, a cut-off body) is a RST_STREAM, never an
//! END_STREAM that would pass for complete.
//!
//! Nothing is read from either side faster than the other takes it: the client's DATA is
//! acknowledged (its window reopened) only once written into the pipe, and the proxy's answer
//! is read only as the client's window grants room for it.

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::flood::StreamRecord;
use super::pipe::{self, StreamEnd};
use crate::connection;
use crate::context::ServerContext;
use crate::forward::{Chunk, ChunkedDecoder};
use crate::limits::Places;
use crate::transport::ClientInfo;

/// Bytes in flight in each direction of a stream's pipe.
const PIPE_BUFFER: usize = 16 * 1024;
/// The most read from the proxy's answer at once: one DATA frame of the default size.
const CHUNK: usize = 16 * 1024;
/// The largest answer head taken from the proxy (an origin's head is at most 64 KiB).
const MAX_ANSWER_HEAD: usize = 128 * 1024;
/// The most fields an answer head may have.
const MAX_ANSWER_FIELDS: usize = 128;

/// Serves one stream of an HTTP/2 connection to its end. `record` learns when the stream is
/// answered (its resets are then no flood) and forgets it when this task ends.
pub async fn serve(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut record: StreamRecord,
    ctx: Arc<ServerContext>,
    info: ClientInfo,
) {
    let (parts, body) = request.into_parts();
    let mut exchange = match translate(&parts, body.is_end_stream()) {
        Ok(exchange) => exchange,
        Err(why) => {
            // A malformed request is a stream error (RFC 9113 §8.1.1).
            log::debug!("{}: HTTP/2 stream refused: {why}", info.peer);
            respond.send_reset(Reason::PROTOCOL_ERROR);
            return;
        }
    };
    let (stream_end, proxy_end) = pipe::pair(PIPE_BUFFER);
    let info = ClientInfo {
        http2: true,
        ..info
    };
    let head = std::mem::take(&mut exchange.head);
    let proxy = connection::converse(proxy_end, info, head, ctx, Places::none());
    let bridge = bridge(stream_end, body, respond, &mut record, &exchange);
    tokio::join!(proxy, bridge);
}

/// How the request's DATA go into the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// None: the request ended with its HEADERS.
    Nothing,
    /// As they are: a body of the declared `content-length`.
    Raw,
    /// Framed as `Transfer-Encoding: chunked`: a body of unknown length.
    Chunked,
    /// A tunnel's bytes; the client's END_STREAM is a half-close.
    Tunnel,
}

/// A stream's request as HTTP/1.1.
#[derive(Debug)]
struct Exchange {
    head: Vec<u8>,
    upload: Upload,
    connect: bool,
    /// A HEAD request, whose answer has no body whatever its fields say.
    head_request: bool,
}

/// Translates a request (pseudo-header fields already checked by `h2`: a CONNECT has an
/// `:authority` and no `:scheme` or `:path`; any other request a `:scheme` and a `:path`).
fn translate(parts: &Parts, ends_stream: bool) -> Result<Exchange, &'static str> {
    let connect = parts.method == Method::CONNECT;
    let host_field = || {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    };
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| host_field().filter(|_| !connect))
        .ok_or("no :authority")?;
    if authority.contains('@') {
        return Err("userinfo in :authority");
    }
    let mut head = Vec::with_capacity(512);
    if connect {
        push(&mut head, &["CONNECT ", authority, " HTTP/1.1\r\n"]);
    } else {
        let scheme = parts.uri.scheme_str().ok_or("no :scheme")?;
        // `OPTIONS *` through a proxy is the absolute URI without a path (RFC 9112 §3.2.4).
        let path = match parts.uri.path_and_query().map(|p| p.as_str()) {
            Some("*") | None => "",
            Some(path) => path,
        };
        let method = parts.method.as_str();
        push(
            &mut head,
            &[method, " ", scheme, "://", authority, path, " HTTP/1.1\r\n"],
        );
    }
    push(&mut head, &["Host: ", authority, "\r\n"]);
    // HTTP/2 may split the cookie field; HTTP/1.1 wants one (RFC 9113 §8.2.3).
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if name == header::HOST {
            continue;
        }
        if name == header::COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !cookies.is_empty() {
        head.extend_from_slice(b"cookie: ");
        head.extend_from_slice(&cookies.join(&b"; "[..]));
        head.extend_from_slice(b"\r\n");
    }
    let length = parts.headers.get(header::CONTENT_LENGTH);
    let upload = if connect {
        Upload::Tunnel
    } else if ends_stream {
        if length.is_some_and(|l| l.as_bytes() != b"0") {
            return Err("content-length on a request without DATA");
        }
        Upload::Nothing
    } else if length.is_some() {
        Upload::Raw
    } else {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Upload::Chunked
    };
    head.extend_from_slice(b"\r\n");
    Ok(Exchange {
        head,
        upload,
        connect,
        head_request: parts.method == Method::HEAD,
    })
}

fn push(out: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
}

/// How an exchange ended when it did not end cleanly.
#[derive(Debug)]
enum Ended {
    /// The client reset the stream (or its connection went away).
    ClientReset,
    /// The proxy aborted its answer, or its answer was unusable or cut off.
    Proxy(String),
}

/// Moves the exchange between the stream and the pipe until both directions are done.
async fn bridge(
    end: StreamEnd,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    record: &mut StreamRecord,
    exchange: &Exchange,
) {
    let (mut from_proxy, mut to_proxy) = tokio::io::split(end);
    let reason = if exchange.connect {
        Reason::CONNECT_ERROR
    } else {
        Reason::INTERNAL_ERROR
    };
    let ended = {
        let mut upload = pin!(upload(&mut body, &mut to_proxy, exchange.upload));
        let mut uploading = true;
        let mut buf = BytesMut::new();
        // The answer's head, while the request body goes up.
        let answer = loop {
            tokio::select! {
                done = &mut upload, if uploading => match done {
                    Ok(()) => uploading = false,
                    Err(ended) => break Err(ended),
                },
                answer = read_answer(&mut from_proxy, &mut buf, exchange) => break answer,
                _ = poll_fn(|cx| respond.poll_reset(cx)) => break Err(Ended::ClientReset),
            }
        };
        match answer {
            Err(ended) => Err((ended, None)),
            Ok(answer) => {
                let empty = answer.body == Body::Empty;
                // Before the HEADERS can reach the client, and so before its reset can.
                record.answering();
                match respond.send_response(answer.response, empty) {
                    Err(_) => Err((Ended::ClientReset, None)),
                    Ok(_) if empty => Ok(()),
                    Ok(mut send) => {
                        let tunnel = answer.body == Body::Tunnel;
                        let down = {
                            let mut download =
                                pin!(download(&mut from_proxy, &mut send, buf, answer.body));
                            loop {
                                tokio::select! {
                                    done = &mut upload, if uploading => match done {
                                        Ok(()) => uploading = false,
                                        Err(ended) => break Err(ended),
                                    },
                                    done = &mut download => break done,
                                }
                            }
                        };
                        match down {
                            // A tunnel's origin closed; the client may still send.
                            Ok(()) if tunnel && uploading => {
                                upload.await.map_err(|ended| (ended, Some(send)))
                            }
                            Ok(()) => Ok(()),
                            Err(ended) => Err((ended, Some(send))),
                        }
                    }
                }
            }
        }
    };
    match ended {
        Ok(()) => from_proxy.unsplit(to_proxy).finish(),
        Err((Ended::ClientReset, _)) => {}
        Err((Ended::Proxy(why), send)) => {
            log::debug!("HTTP/2 stream reset ({reason:?}): {why}");
            match send {
                Some(mut send) => send.send_reset(reason),
                None => respond.send_reset(reason),
            }
        }
    }
}

/// Copies the request's DATA into the pipe, each acknowledged to the client only once it is
/// in. `Ok` once the client ended the stream, or the proxy stopped reading it.
async fn upload(
    body: &mut RecvStream,
    to: &mut WriteHalf<StreamEnd>,
    upload: Upload,
) -> Result<(), Ended> {
    let mut open = true;
    while let Some(data) = body.data().await {
        let data = data.map_err(|_| Ended::ClientReset)?;
        let len = data.len();
        if open {
            let written = match upload {
                Upload::Chunked if len > 0 => {
                    let size = format!("{len:x}\r\n");
                    write_parts(to, &[size.as_bytes(), &data, b"\r\n"]).await
                }
                _ => to.write_all(&data).await,
            };
            // The proxy stopped reading (it answered, or its tunnel ended): what the client
            // still sends is taken and dropped, so its window never stays shut.
            open = written.is_ok();
        }
        let _ = body.flow_control().release_capacity(len);
    }
    if open {
        let _ = match upload {
            Upload::Chunked => to.write_all(b"0\r\n\r\n").await,
            Upload::Tunnel => to.shutdown().await,
            Upload::Nothing | Upload::Raw => Ok(()),
        };
    }
    Ok(())
}

async fn write_parts(to: &mut WriteHalf<StreamEnd>, parts: &[&[u8]]) -> io::Result<()> {
    for part in parts {
        to.write_all(part).await?;
    }
    Ok(())
}

/// How the answer's body is framed in the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Empty,
    Length(u64),
    Chunked,
    /// Until the proxy closes.
    UntilClose,
    /// A tunnel's bytes, until the proxy closes.
    Tunnel,
}

/// The proxy's answer head, as HTTP/2 takes it.
struct Answer {
    response: Response<()>,
    body: Body,
}

/// Fields that belong to one HTTP/1.1 connection and mean nothing in HTTP/2 (RFC 9113
/// §8.2.2).
const CONNECTION_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Reads the proxy's answer head from the pipe (skipping interim `1xx` answers); what
/// follows it stays in `buf`.
async fn read_answer(
    from: &mut ReadHalf<StreamEnd>,
    buf: &mut BytesMut,
    exchange: &Exchange,
) -> Result<Answer, Ended> {
    loop {
        if let Some(end) = find_head_end(buf) {
            let head = buf.split_to(end);
            match parse_answer(&head, exchange)? {
                Some(answer) => return Ok(answer),
                None => continue,
            }
        }
        if buf.len() > MAX_ANSWER_HEAD {
            return Err(Ended::Proxy("answer head too large".into()));
        }
        buf.reserve(CHUNK);
        match from.read_buf(buf).await {
            Ok(0) => return Err(Ended::Proxy("closed before an answer".into())),
            Ok(_) => {}
            Err(e) => return Err(Ended::Proxy(format!("no answer ({e})"))),
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// An answer head, or `None` for an interim one.
fn parse_answer(head: &[u8], exchange: &Exchange) -> Result<Option<Answer>, Ended> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_ANSWER_FIELDS];
    let mut parsed = httparse::Response::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Ended::Proxy("unreadable answer head".into())),
    }
    let status = parsed.code.unwrap_or(0);
    if (100..200).contains(&status) {
        return Ok(None);
    }
    let mut response = Response::builder().status(status);
    let named: Vec<String> = parsed
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| {
            String::from_utf8_lossy(f.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut length = None;
    let mut chunked = false;
    for field in parsed.headers.iter() {
        let name = field.name.to_ascii_lowercase();
        if name == "transfer-encoding" {
            chunked = field.value.eq_ignore_ascii_case(b"chunked");
        }
        if name == "content-length" {
            length = std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        if CONNECTION_FIELDS.contains(&name.as_str()) || named.contains(&name) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            continue;
        };
        response = response.header(name, value);
    }
    let success = (200..300).contains(&status);
    let body = if exchange.connect && success {
        Body::Tunnel
    } else if exchange.head_request || status == 204 || status == 304 {
        Body::Empty
    } else if chunked {
        Body::Chunked
    } else if let Some(length) = length {
        if length == 0 {
            Body::Empty
        } else {
            Body::Length(length)
        }
    } else {
        Body::UntilClose
    };
    let response = response
        .body(())
        .map_err(|e| Ended::Proxy(format!("answer not valid in HTTP/2 ({e})")))?;
    Ok(Some(Answer { response, body }))
}

/// Sends the answer's body (or a tunnel's bytes) as DATA, ending the stream when it ends.
async fn download(
    from: &mut ReadHalf<StreamEnd>,
    send: &mut SendStream<Bytes>,
    mut buf: BytesMut,
    body: Body,
) -> Result<(), Ended> {
    match body {
        Body::Empty => {}
        Body::Tunnel | Body::UntilClose => loop {
            if buf.is_empty() && read_more(from, send, &mut buf).await? == 0 {
                break;
            }
            send_all(send, buf.split().freeze()).await?;
        },
        Body::Length(mut remaining) => {
            while remaining > 0 {
                if buf.is_empty() && read_more(from, send, &mut buf).await? == 0 {
                    return Err(Ended::Proxy("body cut off".into()));
                }
                let n = remaining.min(buf.len() as u64);
                send_all(send, buf.split_to(n as usize).freeze()).await?;
                remaining -= n;
            }
        }
        Body::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                let step = decoder
                    .next(&buf)
                    .map_err(|e| Ended::Proxy(format!("bad chunked body ({e})")))?;
                match step {
                    Chunk::Data(n) => send_all(send, buf.split_to(n).freeze()).await?,
                    Chunk::Framing(n) => buf.advance(n),
                    Chunk::Done(_) => break,
                    Chunk::NeedMore => {
                        if read_more(from, send, &mut buf).await? == 0 {
                            return Err(Ended::Proxy("chunked body cut off".into()));
                        }
                    }
                }
            }
        }
    }
    send.send_data(Bytes::new(), true)
        .map_err(|_| Ended::ClientReset)
}

/// Reads more of the answer into `buf`, or learns that the client reset the stream.
async fn read_more(
    from: &mut ReadHalf<StreamEnd>,
    send: &mut SendStream<Bytes>,
    buf: &mut BytesMut,
) -> Result<usize, Ended> {
    buf.reserve(CHUNK);
    let mut limited = AsyncReadExt::take(&mut *from, CHUNK as u64);
    tokio::select! {
        read = limited.read_buf(buf) => read.map_err(|e| Ended::Proxy(format!("answer failed ({e})"))),
        _ = poll_fn(|cx| send.poll_reset(cx)) => Err(Ended::ClientReset),
    }
}

/// Sends `data` as the client's window allows: no more is handed to `h2` than the client
/// can take now.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), Ended> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            _ => return Err(Ended::ClientReset),
        };
        if granted == 0 {
            continue;
        }
        let part = data.split_to(granted.min(data.len()));
        send.send_data(part, false)
            .map_err(|_| Ended::ClientReset)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn a_connect_becomes_an_authority_form_head() {
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .header("proxy-authorization", "Basic dTpw")
            .body(())
            .unwrap();
        let exchange = translate(&parts(request), false).unwrap();
        assert_eq!(
            String::from_utf8(exchange.head).unwrap(),
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
             proxy-authorization: Basic dTpw\r\n\r\n"
        );
        assert_eq!(exchange.upload, Upload::Tunnel);
    }

    #[test]
    fn a_request_becomes_absolute_form_with_its_body_framed() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("http://origin.test:8080/a?b=c")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("host", "ignored.test")
            .body(())
            .unwrap();
        let exchange = translate(&parts(request), false).unwrap();
        assert_eq!(
            String::from_utf8(exchange.head).unwrap(),
            "POST http://origin.test:8080/a?b=c HTTP/1.1\r\nHost: origin.test:8080\r\n\
             cookie: a=1; b=2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(exchange.upload, Upload::Chunked);
        let request = Request::builder()
            .uri("http://origin.test/")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert_eq!(
            translate(&parts(request), false).unwrap().upload,
            Upload::Raw
        );
        let request = Request::builder()
            .uri("http://origin.test/")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert!(translate(&parts(request), true).is_err());
    }

    #[test]
    fn connection_fields_do_not_reach_the_stream() {
        let exchange = Exchange {
            head: Vec::new(),
            upload: Upload::Nothing,
            connect: false,
            head_request: false,
        };
        let head = b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\
                     Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n";
        let answer = parse_answer(head, &exchange).unwrap().unwrap();
        let headers = answer.response.headers();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(answer.body, Body::Chunked);
        assert!(
            parse_answer(b"HTTP/1.1 100 Continue\r\n\r\n", &exchange)
                .unwrap()
                .is_none()
        );
    }
}
