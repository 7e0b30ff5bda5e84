//! Lets gRPC clients that send a unix socket's path as the HTTP/2 `:authority` reach a tonic
//! server. The kubelet's plugin watcher dials the registration socket by its path, and grpc-go
//! then sends that path (`/var/lib/kubelet/plugins_registry/…`) as the authority; h2 refuses
//! the request as malformed (PROTOCOL_ERROR) before tonic sees it (hyperium/h2#487, open). So
//! the bytes a client sends are read through [`LocalAuthority`]: frames pass as they are, except
//! header blocks whose `:authority` is not a valid authority, which are decoded and encoded
//! again with `localhost` in its place (what grpc-go sends when dialed by `unix://` URL).
//!
//! HPACK is stateful per direction: every header block the client sends is decoded here (with
//! the client's dynamic table) and encoded again for the server with this connection's own
//! encoder, so both tables stay consistent with what each peer saw.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client's connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"): passed as it is.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's initial SETTINGS_MAX_FRAME_SIZE: re-encoded blocks are cut to it, since the
/// server's setting is not read here.
const MAX_FRAME: usize = 16_384;
/// What replaces an authority h2 would refuse.
const LOCALHOST: &[u8] = b"localhost";
/// Bounds the header block collected across CONTINUATION frames (h2's own default limit on
/// a header list is 16 MiB; a gRPC request's is tiny).
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// A connection whose client-to-server header blocks get a valid `:authority` (module doc).
pub struct LocalAuthority<S> {
    inner: S,
    /// Bytes read from the client, not yet a whole frame.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    preface_left: usize,
    /// A header block being collected: (stream id, flags of its HEADERS frame, block).
    pending: Option<(u32, u8, Vec<u8>)>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl<S> LocalAuthority<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            input: BytesMut::new(),
            output: BytesMut::new(),
            preface_left: PREFACE_LEN,
            pending: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
        }
    }

    /// Moves every whole frame of `input` to `output`, header blocks rewritten.
    fn process(&mut self) -> io::Result<()> {
        if self.preface_left > 0 {
            let take = self.preface_left.min(self.input.len());
            self.output.extend_from_slice(&self.input.split_to(take));
            self.preface_left -= take;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        while self.input.len() >= FRAME_HEADER_LEN {
            let length =
                usize::from(self.input[0]) << 16 | usize::from(self.input[1]) << 8 | usize::from(self.input[2]);
            // Whole frames are buffered: one longer than any frame size a server here allows
            // (h2's maximum is 16 MiB, tonic keeps the 16 KiB default) is not waited for.
            if length > MAX_HEADER_BLOCK {
                return Err(invalid("a frame over 1 MiB"));
            }
            if self.input.len() < FRAME_HEADER_LEN + length {
                break;
            }
            let frame = self.input.split_to(FRAME_HEADER_LEN + length);
            let (kind, flags) = (frame[3], frame[4]);
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            let payload = &frame[FRAME_HEADER_LEN..];
            match (kind, &mut self.pending) {
                (HEADERS, None) => {
                    let fragment = headers_fragment(flags, payload)?;
                    if flags & END_HEADERS == 0 {
                        self.pending = Some((stream, flags, fragment.to_vec()));
                    } else {
                        self.emit(stream, flags, fragment)?;
                    }
                }
                (CONTINUATION, Some((pending_stream, _, block))) if *pending_stream == stream => {
                    if block.len() + payload.len() > MAX_HEADER_BLOCK {
                        return Err(invalid("a header block over 1 MiB"));
                    }
                    block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        let (stream, flags, block) = self.pending.take().expect("pending block");
                        self.emit(stream, flags, &block)?;
                    }
                }
                // Anything else between HEADERS and its last CONTINUATION is the client's
                // protocol error; the server says so when it sees the frame.
                _ => self.output.extend_from_slice(&frame),
            }
        }
        Ok(())
    }

    /// Decodes `block`, puts `localhost` for an authority h2 refuses, and writes it as one
    /// HEADERS frame (plus CONTINUATION frames when it is long) keeping END_STREAM.
    fn emit(&mut self, stream: u32, flags: u8, block: &[u8]) -> io::Result<()> {
        let mut headers = self.decoder.decode(block).map_err(|e| invalid(&format!("an HPACK block: {e}")))?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                *value = LOCALHOST.to_vec();
            }
        }
        let block = self.encoder.encode(headers.iter().map(|(name, value)| (name.as_slice(), value.as_slice())));
        let chunks: Vec<&[u8]> = if block.is_empty() { vec![&[]] } else { block.chunks(MAX_FRAME).collect() };
        for (index, chunk) in chunks.iter().enumerate() {
            let last = index + 1 == chunks.len();
            let (kind, mut frame_flags) = if index == 0 { (HEADERS, flags & END_STREAM) } else { (CONTINUATION, 0) };
            if last {
                frame_flags |= END_HEADERS;
            }
            let length = u32::try_from(chunk.len()).expect("a chunk fits a frame").to_be_bytes();
            self.output.extend_from_slice(&length[1..]);
            self.output.extend_from_slice(&[kind, frame_flags]);
            self.output.extend_from_slice(&stream.to_be_bytes());
            self.output.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame's payload: without its padding and priority.
fn headers_fragment(flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    let (padding, start) = if flags & PADDED != 0 {
        (usize::from(*payload.first().ok_or_else(|| invalid("a padded HEADERS frame without its pad length"))?), 1)
    } else {
        (0, 0)
    };
    let start = start + if flags & PRIORITY != 0 { 5 } else { 0 };
    payload
        .get(start..payload.len().saturating_sub(padding))
        .ok_or_else(|| invalid("a HEADERS frame shorter than its padding"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from the client: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for LocalAuthority<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of the client's bytes: a frame cut short is dropped with the connection.
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    if let Err(e) = this.process() {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LocalAuthority<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for LocalAuthority<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The frames of `bytes` after the preface: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        bytes = &bytes[PREFACE_LEN..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + length].to_vec()));
            bytes = &bytes[9 + length..];
        }
        out
    }

    async fn through(input: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        LocalAuthority::new(server).read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_everything_else_passes() {
        let mut client_encoder = Encoder::new();
        let request = |encoder: &mut Encoder<'_>, authority: &[u8]| {
            encoder.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":path", b"/pluginregistration.Registration/GetInfo"),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
            ])
        };
        let first = request(&mut client_encoder, b"/var/lib/kubelet/plugins_registry/csi.trustmount.io-reg.sock");
        // The second block leans on the client's dynamic table (indexed entries of the first).
        let second = request(&mut client_encoder, b"/var/lib/kubelet/plugins_registry/csi.trustmount.io-reg.sock");
        let third = request(&mut client_encoder, b"localhost:50051");
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        // Padded, with priority, and split over a CONTINUATION frame.
        let mut padded = vec![2, 0, 0, 0, 0, 16];
        padded.extend_from_slice(&second[..3]);
        padded.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, &second[3..]));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &third));

        let out = through(input).await;
        assert_eq!(&out[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let frames = frames(&out);
        let kinds: Vec<(u8, u8, u32)> =
            frames.iter().map(|(kind, flags, stream, _)| (*kind, *flags, *stream)).collect();
        assert_eq!(
            kinds,
            [
                (0x4, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (0x0, END_STREAM, 1),
                (HEADERS, END_HEADERS | END_STREAM, 3),
                (HEADERS, END_HEADERS | END_STREAM, 5)
            ]
        );
        // The server's view, with a decoder of its own over the rewritten blocks in order.
        let mut server_decoder = Decoder::new();
        let authorities: Vec<Vec<u8>> = [1, 3, 4]
            .iter()
            .map(|index| {
                let headers = server_decoder.decode(&frames[*index].3).unwrap();
                assert!(headers.iter().any(|(name, value)| name == b":path" && value.ends_with(b"/GetInfo")));
                headers.into_iter().find(|(name, _)| name == b":authority").unwrap().1
            })
            .collect();
        assert_eq!(authorities, [b"localhost".to_vec(), b"localhost".to_vec(), b"localhost:50051".to_vec()]);
        assert_eq!(frames[2].3, b"\0\0\0\0\0", "DATA untouched");
    }

    #[tokio::test]
    async fn a_broken_header_block_fails_the_connection() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xbf, 0xff, 0xff]));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        let error = LocalAuthority::new(server).read_to_end(&mut out).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
