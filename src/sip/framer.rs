//! Cuts a SIP byte stream (TCP, TLS) into messages and keepalives.
//!
//! Sans-IO: the connection task pushes bytes in and takes [`Frame`]s out. The
//! framer owns the connection's read buffer, keeps it small while idle, and
//! refuses to grow it past the configured message size.

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message: headers, blank line and `Content-Length` bytes of body.
    Message(Bytes),
    /// A double-CRLF keepalive ping (RFC 5626 §3.5.1); answer with a single CRLF.
    Ping,
    /// A single-CRLF keepalive pong.
    Pong,
}

/// The stream can no longer be framed; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Headers or declared body exceed the message size limit. Carries the bytes
    /// read so far (bounded by the limit) so a `513` can be attempted.
    TooLarge(Bytes),
    /// The Content-Length header is not a number, so the message end is unknown.
    BadContentLength(Bytes),
}

/// Incremental framer for one stream connection.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_message_size: usize,
    base_capacity: usize,
}

impl Framer {
    /// A framer whose buffer starts at `base_capacity` bytes and never holds more
    /// than one message of `max_message_size` bytes plus one read.
    pub fn new(base_capacity: usize, max_message_size: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(base_capacity),
            max_message_size,
            base_capacity,
        }
    }

    /// The buffer to read into; reserves room for at least `base_capacity` bytes.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < self.base_capacity / 2 {
            self.buf.reserve(self.base_capacity);
        }
        &mut self.buf
    }

    /// Whether part of a message is buffered (the slow-loris clock is running).
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        let frame = self.cut();
        let large =
            matches!(&frame, Some(Ok(Frame::Message(m))) if m.len() > 4 * self.base_capacity);
        if large || (self.buf.is_empty() && self.buf.capacity() > 4 * self.base_capacity) {
            // A large message passed through: move what is left to a small
            // buffer so the large allocation is freed once the message is.
            let rest = self.buf.split();
            self.buf = BytesMut::with_capacity(self.base_capacity.max(rest.len()));
            self.buf.extend_from_slice(&rest);
        }
        frame
    }

    fn cut(&mut self) -> Option<Result<Frame, FrameError>> {
        if self.buf.starts_with(b"\r\n\r\n") {
            let _ = self.buf.split_to(4);
            return Some(Ok(Frame::Ping));
        }
        if self.buf.starts_with(b"\r\n") {
            // "\r\n" alone may be the start of a ping: wait for one more byte.
            if self.buf.len() < 3 || (self.buf.len() == 3 && self.buf[2] == b'\r') {
                return None;
            }
            let _ = self.buf.split_to(2);
            return Some(Ok(Frame::Pong));
        }
        let search_len = self.buf.len().min(self.max_message_size + 4);
        let Some(head_end) = memmem::find(&self.buf[..search_len], b"\r\n\r\n") else {
            if self.buf.len() > self.max_message_size {
                return Some(Err(FrameError::TooLarge(self.take_all())));
            }
            return None;
        };
        let body_start = head_end + 4;
        let content_length = match content_length(&self.buf[..head_end]) {
            Ok(length) => length.unwrap_or(0),
            Err(()) => return Some(Err(FrameError::BadContentLength(self.take_all()))),
        };
        let total = body_start.saturating_add(content_length);
        if total > self.max_message_size {
            return Some(Err(FrameError::TooLarge(self.take_all())));
        }
        if self.buf.len() < total {
            return None;
        }
        Some(Ok(Frame::Message(self.buf.split_to(total).freeze())))
    }

    fn take_all(&mut self) -> Bytes {
        let keep = self.buf.len().min(self.max_message_size);
        let out = self.buf.split_to(keep).freeze();
        self.buf.clear();
        out
    }
}

/// Reads the Content-Length (or compact `l`) header from a header section.
/// `Ok(None)` when absent, `Err` when present but not a number.
fn content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = std::str::from_utf8(line[colon + 1..].trim_ascii()).map_err(|_| ())?;
            return value.parse::<usize>().map(Some).map_err(|_| ());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";

    fn feed(framer: &mut Framer, bytes: &[u8]) {
        framer.read_buf().extend_from_slice(bytes);
    }

    #[test]
    fn cuts_messages_split_across_reads() {
        let mut f = Framer::new(64, 1000);
        for chunk in MSG.chunks(5) {
            assert_eq!(f.next_frame(), None);
            feed(&mut f, chunk);
        }
        assert_eq!(
            f.next_frame(),
            Some(Ok(Frame::Message(Bytes::from_static(MSG))))
        );
        assert!(!f.is_partial());
    }

    #[test]
    fn cuts_back_to_back_messages_and_keepalives() {
        let mut f = Framer::new(64, 1000);
        let mut all = b"\r\n\r\n".to_vec();
        all.extend_from_slice(MSG);
        all.extend_from_slice(b"\r\n");
        all.extend_from_slice(MSG);
        feed(&mut f, &all);
        assert_eq!(f.next_frame(), Some(Ok(Frame::Ping)));
        assert!(matches!(f.next_frame(), Some(Ok(Frame::Message(_)))));
        assert_eq!(f.next_frame(), Some(Ok(Frame::Pong)));
        assert!(matches!(f.next_frame(), Some(Ok(Frame::Message(_)))));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn waits_on_lone_crlf() {
        let mut f = Framer::new(64, 1000);
        feed(&mut f, b"\r\n");
        assert_eq!(f.next_frame(), None);
        feed(&mut f, b"\r\n");
        assert_eq!(f.next_frame(), Some(Ok(Frame::Ping)));
    }

    #[test]
    fn refuses_oversize_headers_and_bodies() {
        let mut f = Framer::new(64, 100);
        feed(&mut f, &[b'a'; 150]);
        assert!(matches!(f.next_frame(), Some(Err(FrameError::TooLarge(_)))));
        let mut f = Framer::new(64, 100);
        feed(
            &mut f,
            b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 5000\r\n\r\n",
        );
        assert!(matches!(f.next_frame(), Some(Err(FrameError::TooLarge(_)))));
    }

    #[test]
    fn refuses_bad_content_length() {
        let mut f = Framer::new(64, 1000);
        feed(&mut f, b"OPTIONS sip:a SIP/2.0\r\nl: nine\r\n\r\n");
        assert!(matches!(
            f.next_frame(),
            Some(Err(FrameError::BadContentLength(_)))
        ));
    }

    #[test]
    fn buffer_shrinks_after_a_large_message() {
        let mut f = Framer::new(64, 100_000);
        let body = vec![b'x'; 50_000];
        let mut msg = format!(
            "OPTIONS sip:a SIP/2.0\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(&body);
        feed(&mut f, &msg);
        assert!(matches!(f.next_frame(), Some(Ok(Frame::Message(_)))));
        assert!(f.read_buf().capacity() <= 64 * 4);
    }
}
