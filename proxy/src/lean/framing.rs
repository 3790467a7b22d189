//! Where a response body ends, found while its bytes are forwarded as they
//! come: the lean path relays a worker's body without decoding it (a
//! chunked body stays chunked on the wire), but it must know where the
//! body ends to tell whether the worker's connection can carry the next
//! request, and whether the client's response is complete.
//!
//! The chunked reader follows RFC 9112 §7.1: hex size, optional
//! extensions, CRLF, data, CRLF; a zero size ends the chunks, then trailer
//! lines up to an empty line. Anything else is a framing error: the
//! worker's connection is dropped and the client's closed.

use thiserror::Error;

/// The longest chunk-size line (size and extensions) accepted from a worker.
const MAX_SIZE_LINE: usize = 4096;
/// The longest trailer section accepted from a worker.
const MAX_TRAILERS: usize = 16 * 1024;

/// How a response body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length`: this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Neither: the body runs until the worker closes the connection.
    UntilClose,
}

/// The body's framing is broken.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed chunked body from the worker: {0}")]
pub struct FramingError(&'static str);

impl Framing {
    /// Take the part of `bytes` that belongs to the body: returns how many
    /// of them do (the rest, if any, came after the body's end).
    pub fn consume(&mut self, bytes: &[u8]) -> Result<usize, FramingError> {
        match self {
            Framing::Empty => Ok(0),
            Framing::Length(remaining) => {
                let taken = usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                *remaining -= taken as u64;
                Ok(taken)
            }
            Framing::Chunked(chunked) => chunked.consume(bytes),
            Framing::UntilClose => Ok(bytes.len()),
        }
    }

    /// Whether the whole body has been seen (never, for [`Framing::UntilClose`]:
    /// the worker's close ends it).
    pub fn is_done(&self) -> bool {
        match self {
            Framing::Empty | Framing::Length(0) => true,
            Framing::Chunked(chunked) => chunked.state == State::Done,
            Framing::Length(_) | Framing::UntilClose => false,
        }
    }
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunked {
    state: State,
    /// Bytes of the current size line or trailer section so far.
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// The first digit of a chunk size.
    #[default]
    SizeStart,
    /// More size digits, or the end of the size.
    Size(u64),
    /// Extensions after the size, up to CR.
    Extension(u64),
    /// The LF after a size line.
    SizeLf(u64),
    /// Data bytes remaining in the chunk.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// The start of a trailer line, or the empty line ending the body.
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF of the empty line ending the body.
    EndLf,
    Done,
}

impl Chunked {
    fn consume(&mut self, bytes: &[u8]) -> Result<usize, FramingError> {
        let mut i = 0;
        while i < bytes.len() && self.state != State::Done {
            if let State::Data(remaining) = self.state {
                let taken =
                    usize::try_from(remaining).map_or(bytes.len() - i, |r| r.min(bytes.len() - i));
                let left = remaining - taken as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                i += taken;
                continue;
            }
            self.step(bytes[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// One byte of framing (anything but chunk data).
    fn step(&mut self, byte: u8) -> Result<(), FramingError> {
        self.state = match (self.state, byte) {
            (State::SizeStart, _) => {
                State::Size(hex(byte).ok_or(FramingError("chunk size is not hex"))?)
            }
            (State::Size(size), b'\r') => State::SizeLf(size),
            (State::Size(size), b';' | b' ' | b'\t') => State::Extension(size),
            (State::Size(size), _) => {
                let digit = hex(byte).ok_or(FramingError("chunk size is not hex"))?;
                let size = size.checked_mul(16).and_then(|s| s.checked_add(digit));
                State::Size(size.ok_or(FramingError("chunk size overflows"))?)
            }
            (State::Extension(size), b'\r') => State::SizeLf(size),
            (State::Extension(_), b'\n') => return Err(FramingError("bare LF after a chunk size")),
            (State::Extension(size), _) => {
                self.count_line(MAX_SIZE_LINE)?;
                State::Extension(size)
            }
            (State::SizeLf(0), b'\n') => State::TrailerStart,
            (State::SizeLf(size), b'\n') => State::Data(size),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::SizeStart,
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, b'\n') => {
                return Err(FramingError("bare LF in trailers"))
            }
            (State::TrailerStart | State::Trailer, _) => {
                self.count_line(MAX_TRAILERS)?;
                State::Trailer
            }
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            _ => return Err(FramingError("missing CRLF")),
        };
        if matches!(self.state, State::SizeStart | State::Data(_)) {
            self.line = 0;
        }
        Ok(())
    }

    fn count_line(&mut self, max: usize) -> Result<(), FramingError> {
        self.line += 1;
        if self.line > max {
            return Err(FramingError("size line or trailers too long"));
        }
        Ok(())
    }
}

fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `body` in pieces of `step` bytes; how many bytes belonged to the
    /// body, and whether it ended.
    fn feed(
        framing: &mut Framing,
        body: &[u8],
        step: usize,
    ) -> Result<(usize, bool), FramingError> {
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = framing.consume(piece)?;
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((taken, framing.is_done()))
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_end() {
        let body =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, body.len()] {
            let mut framing = Framing::Chunked(Chunked::default());
            assert_eq!(
                feed(&mut framing, body, step),
                Ok((body.len() - 4, true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn an_unfinished_chunked_body_is_not_done() {
        let mut framing = Framing::Chunked(Chunked::default());
        assert_eq!(feed(&mut framing, b"5\r\nhel", 2), Ok((6, false)));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello",
            b"0\r\nbad\n",
            b"FFFFFFFFFFFFFFFFF\r\n",
        ] {
            let mut framing = Framing::Chunked(Chunked::default());
            assert!(
                framing.consume(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lengths_take_exactly_their_bytes() {
        let mut framing = Framing::Length(5);
        assert_eq!(framing.consume(b"abc"), Ok(3));
        assert!(!framing.is_done());
        assert_eq!(framing.consume(b"deNEXT"), Ok(2));
        assert!(framing.is_done());
        assert!(Framing::Empty.is_done());
        assert!(!Framing::UntilClose.is_done());
    }
}
